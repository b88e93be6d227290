//! Validation of names and identifiers as they arrive on the wire.

use crate::ApiError;

/// Checks an `api-version` value: `YYYY-MM-DD` or `YYYY-MM-DD-preview`.
pub fn api_version(value: Option<&str>) -> Result<(), ApiError> {
    let value = value.ok_or_else(ApiError::missing_api_version)?;
    let date = value.strip_suffix("-preview").unwrap_or(value);
    let b = date.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(ApiError::invalid_api_version(value));
    }
    let month: u32 = date[5..7].parse().unwrap_or(0);
    let day: u32 = date[8..10].parse().unwrap_or(0);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(ApiError::invalid_api_version(value));
    }
    Ok(())
}

/// A UUID in its 8-4-4-4-12 hex form (any case).
pub fn is_uuid(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Subscription ids are UUIDs.
pub fn subscription_id(value: &str) -> Result<(), ApiError> {
    if is_uuid(value) {
        Ok(())
    } else {
        Err(ApiError::invalid_subscription_id(value))
    }
}

/// Resource group names: 1–90 characters of letters, digits, `_ - . ( )`, not ending in `.`.
pub fn resource_group_name(name: &str) -> Result<(), ApiError> {
    let rule = "it must be 1-90 characters of letters, digits, '_', '-', '.', '(' and ')', and must not end with '.'";
    let ok = !name.is_empty()
        && name.chars().count() <= 90
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_resource_group_name(name, rule))
    }
}

/// `Ok` when the name follows its rule, else `InvalidResourceName` quoting the rule.
fn named(ok: bool, kind: &str, name: &str, rule: &str) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_resource_name(kind, name, rule))
    }
}

/// Session pool names: `^[a-z][a-z0-9-]*$`, at most 63 characters.
pub fn pool_name(name: &str) -> Result<(), ApiError> {
    let rule = "it must start with a lowercase letter, contain only lowercase letters, digits and '-', and be at most 63 characters";
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    named(ok, "session pool", name, rule)
}

/// User-assigned identity names: 3–128 characters, letters, digits, `-` and `_`, starting with a
/// letter or digit.
pub fn identity_name(name: &str) -> Result<(), ApiError> {
    let rule = "it must be 3-128 characters of letters, digits, '-' and '_', starting with a letter or digit";
    let ok = (3..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    named(ok, "identity", name, rule)
}

/// Managed cluster names: 1–63 characters, letters, digits, `-` and `_`, starting and ending with a
/// letter or digit.
pub fn cluster_name(name: &str) -> Result<(), ApiError> {
    let rule = "it must be 1-63 characters of letters, digits, '-' and '_', starting and ending with a letter or digit";
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    named(ok, "managed cluster", name, rule)
}

/// Deployment names: 1–64 characters, letters, digits, `- _ . ( )`.
pub fn deployment_name(name: &str) -> Result<(), ApiError> {
    let rule = "it must be 1-64 characters of letters, digits, '-', '_', '.', '(' and ')'";
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    named(ok, "deployment", name, rule)
}

/// Role assignment names are UUIDs.
pub fn role_assignment_name(name: &str) -> Result<(), ApiError> {
    named(is_uuid(name), "role assignment", name, "it must be a UUID")
}

const IDENTIFIER_PUNCTUATION: &str = "_|}{[]:\";'<>?/.,@#$%^&*()-+=!~`";

/// Session identifiers of the data plane: 4–128 characters of letters, digits and the punctuation
/// listed in API.md.
pub fn session_identifier(value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    if !(4..=128).contains(&len) {
        return Err(ApiError::invalid_session_identifier(format!(
            "The identifier must be 4 to 128 characters long; got {len}."
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !IDENTIFIER_PUNCTUATION.contains(*c))
    {
        return Err(ApiError::invalid_session_identifier(format!(
            "The identifier contains the character {bad:?}, which is not allowed; use letters, digits and {IDENTIFIER_PUNCTUATION}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        assert!(api_version(Some("2025-02-02-preview")).is_ok());
        assert!(api_version(Some("2024-03-01")).is_ok());
        assert_eq!(
            api_version(None).unwrap_err().code,
            "MissingApiVersionParameter"
        );
        for bad in [
            "",
            "2024",
            "2024-13-01",
            "2024-01-00",
            "2024-01-01-beta",
            "abcd-ef-gh",
            "2024-1-01",
        ] {
            assert_eq!(
                api_version(Some(bad)).unwrap_err().code,
                "InvalidApiVersionParameter",
                "{bad}"
            );
        }
    }

    #[test]
    fn pool_names() {
        assert!(pool_name("myshellpool").is_ok());
        assert!(pool_name("a-1").is_ok());
        assert!(pool_name(&"a".repeat(63)).is_ok());
        for bad in ["", "1abc", "Abc", "a_b", "a b", "-a", &"a".repeat(64)] {
            assert_eq!(
                pool_name(bad).unwrap_err().code,
                "InvalidResourceName",
                "{bad}"
            );
        }
    }

    #[test]
    fn resource_group_names() {
        assert!(resource_group_name("My-RG_(1).x").is_ok());
        for bad in ["", "a.", "a/b", "a b", &"a".repeat(91)] {
            assert!(resource_group_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        assert!(session_identifier("user-42").is_ok());
        assert!(session_identifier("a`b~c\"d'").is_ok());
        assert!(session_identifier("abc").is_err());
        assert!(session_identifier(&"a".repeat(129)).is_err());
        assert!(session_identifier("ab cd").is_err());
        assert!(session_identifier("abcd\\").is_err());
        assert!(session_identifier("abcé").is_err());
    }

    #[test]
    fn other_names() {
        assert!(is_uuid("00000000-0000-0000-0000-000000000000"));
        assert!(!is_uuid("00000000-0000-0000-0000-00000000000g"));
        assert!(identity_name("pool-uami").is_ok());
        assert!(identity_name("ab").is_err());
        assert!(cluster_name("c1").is_ok());
        assert!(cluster_name("c1-").is_err());
        assert!(deployment_name("deploy.json-2024").is_ok());
        assert!(deployment_name("a/b").is_err());
        assert!(subscription_id("nope").is_err());
    }
}
