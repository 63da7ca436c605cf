//! The running collector: one poll loop per input long-polls its queue and starts a task per
//! message, within a process-wide cap on messages in flight; shutdown stops intake first,
//! lets in-flight messages finish up to a deadline, then cuts what is left.
//!
//! Before polling, it agrees on limits with the relay (`GET /v1/limits`, retried while the
//! relay is away) and fits the configuration to them (`Settings::apply_limits`).
//!
//! Delivery decisions live in `message`; this module only schedules.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use sluice_channel::client::ChannelClient;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{InputSettings, PoisonAction, Settings};
use crate::forward::{jitter, Forwarder};
use crate::message::{self, InputContext};
use crate::metrics;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("relay: {0}")]
    Relay(#[from] sluice_channel::client::ClientError),
    #[error("relay limits: {0}")]
    Limits(#[from] crate::limits::NoRoom),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("metrics listener on {address}: {source}")]
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
    if let Some(address) = &settings.metrics_address {
        let bound = metrics::serve(address, hard_stop.clone())
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
    let fetch = crate::fetch::FetchSettings {
        part_size: settings.fetch.part_bytes,
        parallel_parts: settings.fetch.parallel_parts,
        part_permits: Arc::new(Semaphore::new(settings.fetch.max_parts_in_flight)),
    };
    for input in &settings.inputs {
        let clients = crate::aws::clients(input).await;
        let poison = poison_policy(&clients.sqs, input).await;
        let ledger = Some(crate::ledger::Ledger::open(&input.ledger)?);
        let ctx = Arc::new(InputContext {
            settings: input.clone(),
            clients: clients.clone(),
            batch: settings.batch,
            forwarder: forwarder.clone(),
            fetch: fetch.clone(),
            poison,
            deleter: crate::ack::Deleter::start(
                clients.sqs.clone(),
                input.queue_url.clone(),
                input.name.clone(),
            ),
            ledger,
        });
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

    shutdown.cancelled().await;
    tracing::info!(
        deadline_s = settings.shutdown_timeout.as_secs(),
        "shutting down: no new messages; finishing in-flight work"
    );
    tracker.close();
    if tokio::time::timeout(settings.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline reached; unconfirmed messages are left for redelivery");
        hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    }
    hard_stop.cancel();
    tracing::info!("stopped");
    Ok(())
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
    let agreed = crate::limits::Agreed::new(relay)?;
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

/// Resolves the poison-message policy: the configured threshold, else off when the queue has
/// a redrive policy (its dead-letter queue takes failing messages) and 5 receives otherwise
/// (Filebeat's default), so a queue without a DLQ never cycles a bad message forever.
async fn poison_policy(
    sqs: &aws_sdk_sqs::Client,
    input: &InputSettings,
) -> Option<(u32, PoisonAction)> {
    let redrive = match sqs
        .get_queue_attributes()
        .queue_url(&input.queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
    {
        Ok(out) => out
            .attributes
            .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy)),
        Err(e) => {
            // Unknown: assume a DLQ exists, the choice that never deletes.
            tracing::warn!(input = %input.name, queue = %input.queue_url, error = %crate::aws::describe(&e), "cannot read the queue's redrive policy; assuming one exists");
            true
        }
    };
    let action = input.poison_action.unwrap_or(if redrive {
        PoisonAction::Keep
    } else {
        PoisonAction::Delete
    });
    let policy = match input.max_receive_count {
        Some(max) => Some((max, action)),
        None if redrive => None,
        None => Some((5, action)),
    };
    tracing::info!(input = %input.name, redrive_policy = redrive, poison = ?policy, "poison-message policy");
    policy
}

/// Long-polls one queue while `intake` is open.
async fn poll(
    ctx: Arc<InputContext>,
    in_flight: Arc<Semaphore>,
    tracker: TaskTracker,
    intake: CancellationToken,
    hard_stop: CancellationToken,
) {
    let settings = &ctx.settings;
    let mut error_delay = Duration::from_secs(1);
    loop {
        // Take capacity before receiving: a message is only received when there is room to
        // work on it, so nothing sits invisible in a local queue.
        let first = tokio::select! {
            _ = intake.cancelled() => return,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut permits = vec![first];
        while permits.len() < settings.max_messages as usize {
            match in_flight.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let receive = ctx
            .clients
            .sqs
            .receive_message()
            .queue_url(&settings.queue_url)
            .max_number_of_messages(permits.len() as i32)
            .wait_time_seconds(settings.wait_time.as_secs() as i32)
            .visibility_timeout(settings.visibility_timeout.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .send();
        let result = tokio::select! {
            // A receive cut short by shutdown returns nothing: no message is lost, as any
            // message SQS had picked for it becomes visible again after its timeout.
            _ = intake.cancelled() => return,
            r = receive => r,
        };
        let messages = match result {
            Ok(out) => {
                error_delay = Duration::from_secs(1);
                out.messages.unwrap_or_default()
            }
            Err(e) => {
                let e = crate::aws::describe(&e);
                metrics::count(
                    "sluice_receive_errors_total",
                    "Failed ReceiveMessage calls",
                    &[("input", &settings.name)],
                    1,
                );
                tracing::error!(input = %settings.name, queue = %settings.queue_url, error = %e, retry_in_s = error_delay.as_secs(), "ReceiveMessage failed");
                drop(permits);
                tokio::select! {
                    _ = intake.cancelled() => return,
                    _ = tokio::time::sleep(jitter(error_delay)) => {}
                }
                error_delay = (error_delay * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        metrics::count(
            "sluice_messages_received_total",
            "Messages received from SQS",
            &[("input", &settings.name)],
            messages.len() as u64,
        );
        for message in messages {
            let Some(permit) = permits.pop() else { break };
            let ctx = ctx.clone();
            let hard_stop = hard_stop.clone();
            tracker.spawn(async move {
                message::handle(ctx, message, hard_stop).await;
                drop(permit);
            });
        }
    }
}
