//! Objects flow through moto, the collector, the relay and the mutual-TLS receiver, each in
//! its container, and nothing is lost when the relay is killed (SIGKILL) and started again on
//! the same spool volume, or cut off from the receiver's network for 30 s.

use std::time::{Duration, Instant};

use crate::docker::docker;
use crate::stack::{figures, tally, Lab};

/// Objects per wave and lines per object (~100 bytes a line).
const OBJECTS: usize = 10;
const LINES: usize = 2000;
/// Peak memory a container may reach (its cgroup's peak, page cache included) in these runs.
const MEMORY_BOUND: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_and_restarted_loses_nothing() {
    if !crate::enabled("relay_killed_and_restarted_loses_nothing") {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::start("kill").await;
    let relay = lab.relay(1);
    let collector = lab.collector(1, 10);

    // First wave: lines flow; the relay is killed while they do.
    let mut expected = lab.put_objects("kill", 0..OBJECTS, LINES).await;
    assert!(
        sluice_testkit::wait::wait_for(Duration::from_secs(60), || !lab.received().is_empty())
            .await,
        "no line reached the receiver"
    );
    lab.sample_peaks(&[&relay, &collector]);
    docker(&["kill", &relay]);
    let arrived_at_kill: usize = lab.received().values().sum();

    // Second wave while the relay is dead: the collector takes messages (up to its in-flight
    // cap) and holds them; nothing confirms them, so none of the second wave is deleted.
    expected.extend(lab.put_objects("kill", OBJECTS..2 * OBJECTS, LINES).await);
    let held = sluice_testkit::wait::wait_for(Duration::from_secs(30), || {
        let depth = futures_depth(&lab);
        depth.1 > 0 && depth.0 + depth.1 >= OBJECTS as u64
    })
    .await;
    assert!(
        held,
        "the collector did not hold the messages: queue {:?}",
        lab.wired.depth().await
    );

    docker(&["start", &relay]);
    let got = lab.wait_all(&expected, Duration::from_secs(120)).await;
    lab.sample_peaks(&[&relay, &collector]);
    let (lines, ids, dups) = tally(&expected, &got);
    println!("relay killed after {arrived_at_kill} lines had arrived; {lines} lines, {ids} ids, {dups} duplicates");
    figures(
        "relay kill",
        expected.len(),
        &got,
        started.elapsed().as_secs_f64(),
        &lab.peaks,
    );
    check_bound(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cut_off_for_30s_loses_nothing() {
    if !crate::enabled("relay_cut_off_for_30s_loses_nothing") {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::start("cut").await;
    let relay = lab.relay(1);
    let collector = lab.collector(1, 10);

    let mut expected = lab.put_objects("cut", 0..OBJECTS, LINES).await;
    lab.wait_all(&expected, Duration::from_secs(120)).await;

    // Cut the relay off from the receiver; a second wave goes into its spool meanwhile.
    docker(&["network", "disconnect", &lab.devo, &relay]);
    let cut_at = Instant::now();
    let second = lab.put_objects("cut", OBJECTS..2 * OBJECTS, LINES).await;
    // The collector deletes a message only once the relay answered 200 (durable in its spool):
    // the queue empties while none of the second wave can reach the receiver.
    let taken =
        sluice_testkit::wait::wait_for(Duration::from_secs(25), || futures_depth(&lab) == (0, 0))
            .await;
    let during = lab.received();
    let through = second.iter().filter(|id| during.contains_key(*id)).count();
    assert_eq!(
        through, 0,
        "lines reached the receiver through a cut network"
    );
    assert!(
        taken,
        "the relay's spool did not take the second wave: queue {:?}",
        lab.wired.depth().await
    );
    lab.sample_peaks(&[&relay, &collector]);

    // The 30 s of the cut are the scenario itself, not a guess at a state.
    let rest = Duration::from_secs(30).saturating_sub(cut_at.elapsed());
    tokio::time::sleep(rest).await;
    docker(&["network", "connect", &lab.devo, &relay]);
    expected.extend(second);
    let got = lab.wait_all(&expected, Duration::from_secs(120)).await;
    lab.sample_peaks(&[&relay, &collector, &lab.receiver.clone(), &lab.moto.clone()]);
    let (lines, ids, dups) = tally(&expected, &got);
    println!(
        "cut for {:.1} s; {lines} lines, {ids} ids, {dups} duplicates",
        cut_at.elapsed().as_secs_f64()
    );
    figures(
        "network cut 30 s",
        expected.len(),
        &got,
        started.elapsed().as_secs_f64(),
        &lab.peaks,
    );
    check_bound(&lab);
}

/// The queue's (visible, in flight), from a blocking context inside the runtime.
pub fn futures_depth(lab: &Lab) -> (u64, u64) {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(lab.wired.depth()))
}

/// Every sampled sluice container stayed under [`MEMORY_BOUND`].
pub fn check_bound(lab: &Lab) {
    for (c, peak) in &lab.peaks {
        if c.starts_with("relay") || c.starts_with("collector") {
            assert!(
                *peak < MEMORY_BOUND,
                "{c}: peak {peak} bytes over {MEMORY_BOUND}"
            );
        }
    }
}
