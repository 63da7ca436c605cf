//! Devo tags: static (`cloud.aws.vpc.flow`) or templated
//! (`cloud.aws.cloudtrail.events.{recipientAccountId|unknown}.{awsRegion}`), plus the default tag
//! of each processor.
//!
//! Template syntax: `{name}` or `{name|fallback}`. `name` is a named capture of the selector's key
//! regex when that regex has a group of that name, otherwise a field of the record (a dotted path
//! such as `userIdentity.accountId` walks into JSON objects; text processors with a header — VPC
//! flow, W3C — offer their column names). A missing or empty value becomes the fallback, or
//! `unknown` when none is given. Values are made tag-safe: every byte outside `[A-Za-z0-9_-]`
//! becomes `_` (so a value never adds a level) and they are cut to 64 bytes.
//!
//! It does not check that a Devo table exists for the tag.

use std::borrow::Cow;

/// Placeholder value when a field is missing and the template gives no fallback.
pub const MISSING: &str = "unknown";

/// Longest substituted value, in bytes.
const MAX_VALUE_BYTES: usize = 64;

/// Most placeholders in one template.
pub const MAX_TAG_FIELDS: usize = 12;

/// Why a tag or template is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag {tag:?}: unclosed '{{' at byte {at}")]
    Unclosed { tag: String, at: usize },
    #[error("tag {tag:?}: empty placeholder at byte {at}")]
    EmptyName { tag: String, at: usize },
    #[error("tag {tag:?}: character {ch:?} at byte {at} is not allowed (use A-Z a-z 0-9 _ - and '.' between levels)")]
    BadChar { tag: String, ch: char, at: usize },
    #[error("tag {tag:?}: fallback {fallback:?} must be non-empty and use only A-Z a-z 0-9 _ -")]
    BadFallback { tag: String, fallback: String },
    #[error("tag {tag:?}: {levels} levels, a Devo tag has 2 to 6 dot-separated levels")]
    Levels { tag: String, levels: usize },
    #[error("tag {tag:?}: empty level")]
    EmptyLevel { tag: String },
    #[error("tag {tag:?}: more than {MAX_TAG_FIELDS} placeholders")]
    TooManyFields { tag: String },
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Lit(String),
    Field { name: String, fallback: String },
}

/// A parsed tag, static or templated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate {
    source: String,
    parts: Vec<Part>,
}

/// Record fields a template can read. Implemented per processor.
pub trait FieldSource {
    /// The value of the field at `path` (dotted), as text.
    fn field(&self, path: &str) -> Option<Cow<'_, str>>;

    /// The values of several fields (`out[k]` for `paths[k]`); sources that can find them in
    /// one pass override it.
    fn fields<'s>(&'s self, paths: &[&str], out: &mut [Option<Cow<'s, str>>]) {
        for (p, o) in paths.iter().zip(out.iter_mut()) {
            *o = self.field(p);
        }
    }
}

/// A record without fields.
pub struct NoFields;

impl FieldSource for NoFields {
    fn field(&self, _path: &str) -> Option<Cow<'_, str>> {
        None
    }
}

fn tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl TagTemplate {
    /// Parses and validates a static tag or a template.
    pub fn parse(source: &str) -> Result<Self, TagError> {
        let err_tag = || source.to_string();
        let mut parts = Vec::new();
        let mut lit = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        // Level checks: a level is non-empty when it has a literal char or a placeholder.
        let mut levels = 1;
        let mut level_filled = false;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'{' {
                let close = source[i..]
                    .find('}')
                    .map(|j| i + j)
                    .ok_or(TagError::Unclosed {
                        tag: err_tag(),
                        at: i,
                    })?;
                let inner = &source[i + 1..close];
                let (name, fallback) = match inner.split_once('|') {
                    Some((n, f)) => {
                        if f.is_empty() || !f.bytes().all(tag_byte) {
                            return Err(TagError::BadFallback {
                                tag: err_tag(),
                                fallback: f.to_string(),
                            });
                        }
                        (n.trim(), f.to_string())
                    }
                    None => (inner.trim(), MISSING.to_string()),
                };
                if name.is_empty() || name.contains('{') {
                    return Err(TagError::EmptyName {
                        tag: err_tag(),
                        at: i,
                    });
                }
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Field {
                    name: name.to_string(),
                    fallback,
                });
                level_filled = true;
                i = close + 1;
                continue;
            }
            if b == b'.' {
                if !level_filled {
                    return Err(TagError::EmptyLevel { tag: err_tag() });
                }
                levels += 1;
                level_filled = false;
            } else if tag_byte(b) {
                level_filled = true;
            } else {
                let ch = source[i..].chars().next().unwrap_or('?');
                return Err(TagError::BadChar {
                    tag: err_tag(),
                    ch,
                    at: i,
                });
            }
            lit.push(b as char);
            i += 1;
        }
        if !level_filled {
            return Err(TagError::EmptyLevel { tag: err_tag() });
        }
        if !(2..=6).contains(&levels) {
            return Err(TagError::Levels {
                tag: err_tag(),
                levels,
            });
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if parts
            .iter()
            .filter(|p| matches!(p, Part::Field { .. }))
            .count()
            > MAX_TAG_FIELDS
        {
            return Err(TagError::TooManyFields { tag: err_tag() });
        }
        Ok(TagTemplate {
            source: source.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholder names.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field { name, .. } => Some(name.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Fills the placeholders that are key captures (`captures` holds every group name of the
    /// key regex, with its value when it matched); returns the rest as a template over record
    /// fields, or the finished tag when no record field is needed.
    pub(crate) fn bind(&self, captures: &[(String, Option<String>)]) -> BoundTag {
        let mut parts = Vec::new();
        let mut lit = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => lit.push_str(s),
                Part::Field { name, fallback } => match captures.iter().find(|(n, _)| n == name) {
                    Some((_, value)) => push_value(value.as_deref(), fallback, &mut lit),
                    None => {
                        if !lit.is_empty() {
                            parts.push(Part::Lit(std::mem::take(&mut lit)));
                        }
                        parts.push(p.clone());
                    }
                },
            }
        }
        if parts.is_empty() {
            return BoundTag::Static(lit);
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        BoundTag::PerRecord(parts)
    }
}

/// A template bound to one object's key captures.
#[derive(Debug, Clone)]
pub(crate) enum BoundTag {
    /// The same tag for every event of the object.
    Static(String),
    /// Needs each record's fields.
    PerRecord(Vec<Part>),
}

impl BoundTag {
    /// Renders the tag of one record into `out` (cleared first).
    pub(crate) fn render(&self, record: &dyn FieldSource, out: &mut String) {
        out.clear();
        match self {
            BoundTag::Static(s) => out.push_str(s),
            BoundTag::PerRecord(parts) => {
                let mut names: [&str; MAX_TAG_FIELDS] = [""; MAX_TAG_FIELDS];
                let mut n = 0;
                for p in parts {
                    if let Part::Field { name, .. } = p {
                        if n < MAX_TAG_FIELDS {
                            names[n] = name;
                            n += 1;
                        }
                    }
                }
                let mut values: [Option<Cow<'_, str>>; MAX_TAG_FIELDS] = Default::default();
                record.fields(&names[..n], &mut values[..n]);
                let mut k = 0;
                for p in parts {
                    match p {
                        Part::Lit(s) => out.push_str(s),
                        Part::Field { fallback, .. } => {
                            push_value(values.get(k).and_then(|v| v.as_deref()), fallback, out);
                            k += 1;
                        }
                    }
                }
                // Twelve values of 64 bytes can outgrow the channel's tag limit; the relay
                // would refuse the whole batch. Cut at the limit (tags are ASCII), never
                // leaving an empty last level.
                let max = sluice_channel::wire::MAX_TAG_BYTES;
                if out.len() > max {
                    out.truncate(max);
                    while out.ends_with('.') {
                        out.pop();
                    }
                }
            }
        }
    }
}

/// Appends a tag-safe form of `value`, or `fallback` when it is missing or empty.
fn push_value(value: Option<&str>, fallback: &str, out: &mut String) {
    match value {
        Some(v) if !v.is_empty() => {
            for &b in v.as_bytes().iter().take(MAX_VALUE_BYTES) {
                out.push(if tag_byte(b) { b as char } else { '_' });
            }
        }
        _ => out.push_str(fallback),
    }
}

/// Key patterns that refine a processor's default tag, first match wins.
const KEY_TAGS: &[(&str, &str)] = &[
    ("_app.", "web.aws.alb.access"),
    ("_net.", "web.aws.nlb.access"),
    ("/GuardDuty/", "cloud.aws.guardduty.findings"),
    ("aws-waf-logs-", "cloud.aws.waf.logs"),
    ("_waflogs_", "cloud.aws.waf.logs"),
    ("/WAFLogs/", "cloud.aws.waf.logs"),
    ("vpcdnsquerylogs", "dns.aws.route53"),
    ("_network-firewall_alert", "cloud.aws.firewall.alert"),
    ("/network-firewall/alert/", "cloud.aws.firewall.alert"),
    ("_network-firewall_flow", "cloud.aws.firewall.netflow"),
    ("/network-firewall/flow/", "cloud.aws.firewall.netflow"),
    ("/Config/", "cloud.aws.configlogs.events"),
    ("vpcflowlogs", "cloud.aws.vpc.flow"),
];

/// The default Devo tag of a processor for an object key (DEVO.md's table; the key refines it
/// where one processor serves several sources, e.g. `elb` for ALB and classic ELB, `json_lines`
/// for GuardDuty, WAF and Route 53).
pub fn default_tag(kind: super::ProcessorKind, key: &str) -> &'static str {
    use super::ProcessorKind as K;
    let by_key = || {
        KEY_TAGS
            .iter()
            .find(|(pat, _)| key.contains(pat))
            .map(|(_, t)| *t)
    };
    match kind {
        K::Cloudtrail => "cloud.aws.cloudtrail.events",
        K::VpcFlow => "cloud.aws.vpc.flow",
        K::W3c => "web.aws.cloudfront.access-w3c",
        K::CloudwatchLogs => "cloud.aws.cloudwatch.logs",
        K::Fdr => "my.app.crowdstrike.fdr",
        K::Elb => match by_key() {
            Some(t @ ("web.aws.alb.access" | "web.aws.nlb.access")) => t,
            _ if is_s3_access_key(key) => "web.aws.s3.access",
            _ => "web.aws.elb.access",
        },
        K::Parquet => {
            if key.contains("vpcflowlogs") {
                "cloud.aws.vpc.flow"
            } else if key.contains(".gz.parquet")
                || key.contains("SecurityLake")
                || key.starts_with("aws/")
                || key.starts_with("ext/")
            {
                "cloud.aws.security_lake.event"
            } else {
                "my.app.sluice.parquet"
            }
        }
        K::JsonLines | K::Json => by_key().unwrap_or("my.app.sluice.json"),
        K::Lines => "my.app.sluice.lines",
        K::Extract => "my.app.sluice.extract",
    }
}

/// S3 server access log names end in `YYYY-MM-DD-HH-MM-SS-<16 chars>` with no extension.
fn is_s3_access_key(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key).as_bytes();
    if name.len() != 36 {
        return false;
    }
    let shape = b"dddd-dd-dd-dd-dd-dd-";
    name[..20].iter().zip(shape).all(|(&c, &s)| match s {
        b'd' => c.is_ascii_digit(),
        _ => c == s,
    }) && name[20..].iter().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::super::ProcessorKind;
    use super::*;

    struct Map(&'static [(&'static str, &'static str)]);
    impl FieldSource for Map {
        fn field(&self, path: &str) -> Option<Cow<'_, str>> {
            self.0
                .iter()
                .find(|(k, _)| *k == path)
                .map(|(_, v)| Cow::Borrowed(*v))
        }
    }

    fn render(t: &str, caps: &[(String, Option<String>)], rec: &dyn FieldSource) -> String {
        let mut out = String::new();
        TagTemplate::parse(t)
            .unwrap()
            .bind(caps)
            .render(rec, &mut out);
        out
    }

    #[test]
    fn static_tags_pass_through() {
        assert_eq!(
            render("cloud.aws.vpc.flow", &[], &NoFields),
            "cloud.aws.vpc.flow"
        );
    }

    #[test]
    fn fields_and_fallbacks() {
        let rec = Map(&[("recipientAccountId", "123456789012"), ("awsRegion", "")]);
        assert_eq!(
            render(
                "cloud.aws.cloudtrail.events.{recipientAccountId}.{awsRegion|global}",
                &[],
                &rec
            ),
            "cloud.aws.cloudtrail.events.123456789012.global"
        );
        assert_eq!(
            render("my.app.{nope}", &[], &rec),
            "my.app.unknown",
            "missing field without fallback"
        );
    }

    #[test]
    fn captures_bind_once_and_values_are_sanitised() {
        let caps = vec![
            ("account".to_string(), Some("1234".to_string())),
            ("region".to_string(), None),
        ];
        let t = TagTemplate::parse("my.app.{account}.{region|xx}").unwrap();
        match t.bind(&caps) {
            BoundTag::Static(s) => assert_eq!(s, "my.app.1234.xx"),
            other => panic!("{other:?}"),
        }
        let rec = Map(&[("f", "a.b c/€")]);
        assert_eq!(render("my.app.{f}", &[], &rec), "my.app.a_b_c____");
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for bad in [
            "single",
            "a.b.c.d.e.f.g",
            "a..b",
            "a.b.",
            "a.b{x",
            "a.{}",
            "a.b c",
            "a.{x|bad fallback}",
            "a.{x|}",
            "a.{a}{b}{c}{d}{e}{f}{g}{h}{i}{j}{k}{l}{m}",
        ] {
            assert!(TagTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(TagTemplate::parse("web.aws.cloudfront.access-w3c").is_ok());
        assert!(TagTemplate::parse("my.app.{a}{b}.x").is_ok());
    }

    #[test]
    fn default_tags_follow_the_key() {
        use ProcessorKind as K;
        assert_eq!(
            default_tag(K::Elb, "AWSLogs/1/elasticloadbalancing/eu-west-1/2024/01/01/1_elasticloadbalancing_eu-west-1_app.lb.abc_20240101T0000Z_1.2.3.4_x.log.gz"),
            "web.aws.alb.access"
        );
        assert_eq!(default_tag(K::Elb, "logs/lb_1.log"), "web.aws.elb.access");
        assert_eq!(
            default_tag(K::Elb, "logs/2019-10-02-11-33-07-8E0D58D3B91D0E0B"),
            "web.aws.s3.access"
        );
        assert_eq!(
            default_tag(
                K::JsonLines,
                "AWSLogs/1/GuardDuty/eu-west-1/2024/01/01/x.jsonl.gz"
            ),
            "cloud.aws.guardduty.findings"
        );
        assert_eq!(default_tag(K::JsonLines, "x.jsonl"), "my.app.sluice.json");
        assert_eq!(default_tag(K::Lines, "x"), "my.app.sluice.lines");
        assert_eq!(
            default_tag(K::Parquet, "aws/VPC_FLOW/2.0/region=eu-west-1/x.gz.parquet"),
            "cloud.aws.security_lake.event"
        );
        for k in ProcessorKind::ALL {
            TagTemplate::parse(default_tag(k, "")).unwrap();
        }
    }
}
