//! `${VAR}` interpolation of configuration files, one dialect for both binaries: `${NAME}` is
//! replaced by the variable's value, `$${` stays a literal `${`, and a lone `$` is kept.
//!
//! Interpolation runs on the parsed TOML values, never on the file's text, so a value holding
//! quotes or newlines cannot add keys. Errors name the key and the variable, never a value.

/// Why a string could not be interpolated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${NAME}` names a variable that is not set.
    #[error("`{key}`: environment variable {var} is not set")]
    MissingVar { key: String, var: String },
    /// `${` without its closing brace.
    #[error("`{key}`: unterminated `${{` (write `$${{` for a literal `${{`)")]
    Unterminated { key: String },
}

/// Interpolates `text`, the value of the dotted `key` (for errors).
pub fn interpolate_str(
    text: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| InterpolateError::Unterminated {
                    key: key.to_string(),
                })?;
            let var = &body[..end];
            let value = lookup(var).ok_or_else(|| InterpolateError::MissingVar {
                key: key.to_string(),
                var: var.to_string(),
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Interpolates every string in `value` (tables and arrays included), naming each by its
/// dotted path (`outputs[0].token`) in errors.
pub fn interpolate_toml(
    value: &mut toml::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolateError> {
    walk(value, "", lookup)
}

fn walk(
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolateError> {
    match value {
        toml::Value::String(s) if s.contains('$') => *s = interpolate_str(s, key, lookup)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                walk(item, &path, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Looks variables up in the process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        (n == "K").then(|| "v".to_string())
    }

    #[test]
    fn replaces_escapes_and_keeps_lone_dollars() {
        assert_eq!(
            interpolate_str("a${K}b$${K}", "k", &env).unwrap(),
            "avb${K}"
        );
        assert_eq!(interpolate_str("cost $5", "k", &env).unwrap(), "cost $5");
        assert_eq!(interpolate_str("$", "k", &env).unwrap(), "$");
    }

    #[test]
    fn errors_name_key_and_variable_never_the_value() {
        let e = interpolate_str("secret-${NOPE}", "relay.token", &env).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("relay.token") && text.contains("NOPE"),
            "{text}"
        );
        assert!(!text.contains("secret-"), "{text}");
        let e = interpolate_str("secret-${K", "relay.token", &env).unwrap_err();
        assert!(!e.to_string().contains("secret-"), "{e}");
    }

    #[test]
    fn walks_tables_and_arrays_with_paths() {
        let mut v: toml::Value = toml::from_str("[a]\nb = [\"x\", \"${NOPE}\"]\n").unwrap();
        let e = interpolate_toml(&mut v, &env).unwrap_err();
        assert_eq!(
            e,
            InterpolateError::MissingVar {
                key: "a.b[1]".into(),
                var: "NOPE".into()
            }
        );
        let mut v: toml::Value = toml::from_str("[a]\nb = [\"${K}\"]\nc = 3\n").unwrap();
        interpolate_toml(&mut v, &env).unwrap();
        assert_eq!(v["a"]["b"][0].as_str(), Some("v"));
    }
}
