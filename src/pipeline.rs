//! The running collector: one poll loop per input long-polls its queue and starts a task per
//! message, within a process-wide cap on messages in flight; shutdown stops intake first,
//! lets in-flight messages finish up to a deadline, then cuts what is left.
//!
//! Before polling, it agrees on limits with the relay (`GET /v1/limits`, retried while the
//! relay is away) and fits the configuration to them (`Settings::apply_limits`).
//!
//! It wires the stages: per input, the queue ([`SqsQueue`]), its poison policy, the object
//! work ([`ObjectWork`]), the deleter and the poll loops. Delivery decisions live in
//! [`crate::queue::fate`]; this module only builds and schedules.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_channel::client::ChannelClient;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{InputSettings, Settings};
use crate::delivery::forward::Forwarder;
use crate::object::fetch::FetchSettings;
use crate::object::ledger::Ledger;
use crate::object::work::ObjectWork;
use crate::queue::deleter::Deleter;
use crate::queue::fate::{poison_policy, InputContext};
use crate::queue::poll::poll;
use crate::queue::sqs::SqsQueue;
use crate::queue::Queue;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("relay: {0}")]
    Relay(#[from] sluice_channel::client::ClientError),
    #[error("relay limits: {0}")]
    Limits(#[from] crate::delivery::limits::NoRoom),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("collector.state_dir: {0}")]
    Ledger(#[from] crate::object::ledger::LedgerError),
    #[error("collector.metrics_address: cannot listen on {address}: {source}")]
    Metrics {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until `shutdown` fires, then drains within the configured deadline.
pub async fn run(mut settings: Settings, shutdown: CancellationToken) -> Result<(), StartError> {
    // Fired at the shutdown deadline: interrupts retries and in-flight objects.
    let hard_stop = CancellationToken::new();
    let client = Arc::new(ChannelClient::new(
        &settings.relay_url,
        settings
            .relay_token
            .as_ref()
            .map(|t| t.expose().to_string()),
        settings.relay_timeout,
    )?);
    let forwarder = Arc::new(
        Forwarder::new(client, &settings.collector_id, hard_stop.clone())
            .with_compression_level(settings.batch.compression_level),
    );
    // `GET /ready` on the metrics listener: true from the moment every poll loop runs until
    // shutdown begins (no new messages are taken from then on).
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(address) = &settings.metrics_address {
        let bound = crate::telemetry::serve(address, ready.clone(), hard_stop.clone())
            .await
            .map_err(|source| StartError::Metrics {
                address: address.clone(),
                source,
            })?;
        tracing::info!(address = %bound, "metrics listening");
    }
    if !agree_limits(&mut settings, &forwarder, &shutdown).await? {
        hard_stop.cancel();
        tracing::info!("stopped before the relay's limits were known");
        return Ok(());
    }
    let in_flight = Arc::new(Semaphore::new(settings.max_messages_in_flight));
    let tracker = TaskTracker::new();
    let fetch = FetchSettings {
        part_size: settings.fetch.part_bytes,
        parallel_parts: settings.fetch.parallel_parts,
        part_permits: Arc::new(Semaphore::new(settings.fetch.max_parts_in_flight)),
    };
    for input in &settings.inputs {
        let ctx = input_context(input, &settings, &forwarder, &fetch, &hard_stop).await?;
        tracing::info!(input = %input.name, queue = %input.queue_url, "polling");
        for _ in 0..input.pollers {
            tracker.spawn(poll(
                ctx.clone(),
                in_flight.clone(),
                tracker.clone(),
                shutdown.clone(),
                hard_stop.clone(),
            ));
        }
    }
    ready.store(true, Ordering::Relaxed);
    shutdown.cancelled().await;
    ready.store(false, Ordering::Relaxed);
    drain(&tracker, settings.shutdown_timeout, &hard_stop).await;
    Ok(())
}

/// Wires one input: its queue, poison policy, object work (with its ledger) and deleter.
async fn input_context(
    input: &InputSettings,
    settings: &Settings,
    forwarder: &Arc<Forwarder>,
    fetch: &FetchSettings,
    hard_stop: &CancellationToken,
) -> Result<Arc<InputContext>, StartError> {
    let clients = crate::queue::aws::clients(input).await;
    let queue: Arc<dyn Queue> = Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        &input.queue_url,
        &input.name,
    ));
    let poison = poison_policy(queue.as_ref(), input).await;
    let work = ObjectWork {
        settings: input.clone(),
        s3: clients.s3,
        batch: settings.batch,
        forwarder: forwarder.clone(),
        fetch: fetch.clone(),
        ledger: Some(Ledger::open(&input.ledger)?),
        hard_stop: hard_stop.clone(),
    };
    Ok(Arc::new(InputContext {
        settings: input.clone(),
        deleter: Deleter::start(queue.clone(), input.queue_url.clone(), input.name.clone()),
        queue,
        work: Arc::new(work),
        poison,
    }))
}

/// Shutdown: no new messages (the poll loops saw `shutdown`); in-flight messages get
/// `deadline` to finish, then the hard stop cuts what is left (it is redelivered).
async fn drain(tracker: &TaskTracker, deadline: Duration, hard_stop: &CancellationToken) {
    tracing::info!(
        deadline_s = deadline.as_secs(),
        "shutting down: no new messages; finishing in-flight work"
    );
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline reached; unconfirmed messages are left for redelivery");
        hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    }
    hard_stop.cancel();
    tracing::info!("stopped");
}

/// Learns the relay's caps (retrying while it is unreachable), fits the configuration to them
/// and logs the agreed limits once. False when `shutdown` came first. A dry run (every input
/// `do_not_send`) asks no relay: it fits the channel's v1 defaults.
async fn agree_limits(
    settings: &mut Settings,
    forwarder: &Forwarder,
    shutdown: &CancellationToken,
) -> Result<bool, StartError> {
    let relay = if settings.inputs.iter().all(|i| i.do_not_send) {
        sluice_channel::limits::ChannelLimits::V1_DEFAULTS
    } else {
        match forwarder.fetch_limits(shutdown).await {
            None => return Ok(false),
            Some(result) => result?,
        }
    };
    let agreed = crate::delivery::limits::Agreed::new(relay)?;
    for c in settings.apply_limits(&agreed)? {
        tracing::warn!(key = %c.key, configured = c.from, used = c.to, "lowered to fit the relay's limits");
    }
    forwarder.set_limits(agreed);
    tracing::info!(
        relay_max_body_bytes = relay.max_body_bytes,
        relay_max_batch_bytes = relay.max_batch_bytes,
        relay_max_event_bytes = relay.max_event_bytes,
        relay_max_tag_bytes = relay.max_tag_bytes,
        batch_max_bytes = settings.batch.max_bytes,
        event_cap = agreed.event_bytes,
        "limits agreed with the relay"
    );
    Ok(true)
}
