//! Scale-out on one queue as the pod design does it: three collector + relay pairs (each pair
//! its own relay and spool), one collector killed (SIGKILL) mid-run; a short visibility
//! timeout brings its messages back to the others. Every line arrives at least once; the
//! duplicate ratio is printed.

use std::time::{Duration, Instant};

use crate::docker::docker;
use crate::flow::check_bound;
use crate::stack::{figures, tally, Lab};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pairs_one_collector_killed_every_line_arrives() {
    if !crate::enabled("three_pairs_one_collector_killed_every_line_arrives") {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::start("scale").await;
    let relays: Vec<String> = (1..=3).map(|n| lab.relay(n)).collect();
    let collectors: Vec<String> = (1..=3).map(|n| lab.collector(n, 5)).collect();

    let expected = lab.put_objects("scale", 0..30, 2000).await;
    // Kill one collector once lines flow, while it very likely holds messages.
    let flowing = sluice_testkit::wait::wait_for(Duration::from_secs(60), || {
        lab.received().values().sum::<usize>() >= expected.len() / 10
    })
    .await;
    assert!(flowing, "lines did not start flowing");
    let all: Vec<&str> = relays
        .iter()
        .chain(&collectors)
        .map(String::as_str)
        .collect();
    lab.sample_peaks(&all);
    docker(&["kill", &collectors[1]]);
    let at_kill: usize = lab.received().values().sum();

    let got = lab.wait_all(&expected, Duration::from_secs(120)).await;
    let alive: Vec<&str> = all
        .iter()
        .copied()
        .filter(|c| *c != collectors[1])
        .collect();
    lab.sample_peaks(&alive);
    let (lines, ids, dups) = tally(&expected, &got);
    println!(
        "collector 2 killed after {at_kill} lines; {lines} lines, {ids} ids, {dups} duplicates \
         (ratio {:.4})",
        dups as f64 / ids as f64
    );
    figures(
        "scale-out 3 pairs, 1 killed",
        expected.len(),
        &got,
        started.elapsed().as_secs_f64(),
        &lab.peaks,
    );
    check_bound(&lab);
}
