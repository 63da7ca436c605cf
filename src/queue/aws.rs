//! AWS clients for one input: one `SdkConfig` from aws-config's standard loader (so the
//! usual variables, profiles, web identity and instance roles work), with the input's
//! region, endpoint and static keys laid over it; SQS and S3 clients cloned from it.
//!
//! It builds clients; it does not call them.

use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::SharedCredentialsProvider;

use crate::config::InputSettings;

/// The clients one input uses.
#[derive(Clone, Debug)]
pub struct Clients {
    /// SQS, for receive, visibility and delete.
    pub sqs: aws_sdk_sqs::Client,
    /// S3, for GetObject.
    pub s3: aws_sdk_s3::Client,
}

/// Lays a chain of AssumeRole providers over `shared`'s credentials: the base account role
/// first, then the cross-account role assumed with the base role's credentials. The SDK's
/// identity cache refreshes the outermost credentials before they expire, and each refresh
/// re-assumes the chain, so long runs outlive the first session.
async fn assume_roles(
    shared: aws_config::SdkConfig,
    input: &InputSettings,
) -> aws_config::SdkConfig {
    let mut provider: Option<SharedCredentialsProvider> = None;
    for role in &input.assume_roles {
        let mut builder = AssumeRoleProvider::builder(role)
            .session_name(format!("sluice-{}", input.name))
            .configure(&shared);
        if let Some(id) = &input.external_id {
            builder = builder.external_id(id);
        }
        let next = match provider.take() {
            None => builder.build().await,
            Some(inner) => builder.build_from_provider(inner).await,
        };
        provider = Some(SharedCredentialsProvider::new(next));
    }
    match provider {
        Some(p) => shared.into_builder().credentials_provider(p).build(),
        None => shared,
    }
}

/// Builds the clients of `input`.
pub async fn clients(input: &InputSettings) -> Clients {
    // The read timeout must exceed the long-poll wait, or every empty poll would time out.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(input.wait_time + Duration::from_secs(40))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = &input.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &input.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((id, secret)) = &input.static_keys {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            id,
            secret.expose(),
            None,
            None,
            "sluice-config",
        ));
    }
    let mut shared = loader.load().await;
    if !input.assume_roles.is_empty() {
        shared = assume_roles(shared, input).await;
    }
    let s3_config = aws_sdk_s3::config::Builder::from(&shared)
        // Emulators and S3-compatible stores rarely serve virtual-hosted buckets.
        .force_path_style(input.endpoint_url.is_some())
        .interceptor(AttemptCounter { service: "s3" })
        .build();
    let sqs_config = aws_sdk_sqs::config::Builder::from(&shared)
        .interceptor(AttemptCounter { service: "sqs" })
        .build();
    Clients {
        sqs: aws_sdk_sqs::Client::from_conf(sqs_config),
        s3: aws_sdk_s3::Client::from_conf(s3_config),
    }
}

/// A one-line description of an SDK error: the service's error code and message when there
/// is one, else the transport failure. `DisplayErrorContext` would print the whole raw
/// response (headers and body), which is noise in a log line.
pub fn describe<E, R>(err: &aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_sqs::error::SdkError;
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            match (e.code(), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => e.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "timed out".to_string(),
        other => {
            // Dispatch and response errors: the innermost source says what broke.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// Counts AWS operations and their attempts, so the SDK's own retries (attempts beyond the
/// first, with its standard backoff) show in the metrics: retries = attempts − operations.
#[derive(Debug)]
struct AttemptCounter {
    service: &'static str,
}

impl aws_sdk_sqs::config::Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "sluice-attempt-counter"
    }

    fn read_before_execution(
        &self,
        _context: &aws_sdk_sqs::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        crate::telemetry::aws_operation(self.service);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_sqs::config::RuntimeComponents,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        crate::telemetry::aws_attempt(self.service);
        Ok(())
    }
}
