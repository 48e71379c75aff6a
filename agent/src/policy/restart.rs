//! `--restart no|on-failure[:N]|always`, as docker spells it.
use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times when given.
    OnFailure { max_retries: Option<u32> },
    /// Restart after every exit that `stop`, `kill` or `rm` did not ask for.
    Always,
}

impl RestartPolicy {
    /// Whether a container that exited with `exit_code` after `restarts` restarts runs again.
    pub fn restarts_after(&self, exit_code: i32, restarts: u32, stop_requested: bool) -> bool {
        if stop_requested {
            return false;
        }
        match self {
            Self::No => false,
            Self::Always => true,
            Self::OnFailure { max_retries } => {
                exit_code != 0 && max_retries.is_none_or(|max| restarts < max)
            }
        }
    }

    /// Docker's back-off: 100 ms doubling per restart, at most a minute.
    pub fn delay(restarts: u32) -> Duration {
        Duration::from_millis(100u64.saturating_mul(1 << restarts.min(10)))
            .min(Duration::from_secs(60))
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!("invalid restart policy {value:?}: use no, on-failure, on-failure:N (N >= 1) or always")
        };
        match value.split_once(':') {
            None => match value {
                "no" => Ok(Self::No),
                "always" => Ok(Self::Always),
                "on-failure" => Ok(Self::OnFailure { max_retries: None }),
                _ => Err(invalid()),
            },
            Some(("on-failure", count)) => match count.parse::<u32>() {
                Ok(max) if max >= 1 => Ok(Self::OnFailure {
                    max_retries: Some(max),
                }),
                _ => Err(invalid()),
            },
            Some(_) => Err(invalid()),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::No => f.write_str("no"),
            Self::Always => f.write_str("always"),
            Self::OnFailure { max_retries: None } => f.write_str("on-failure"),
            Self::OnFailure {
                max_retries: Some(max),
            } => write!(f, "on-failure:{max}"),
        }
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<RestartPolicy> for String {
    fn from(policy: RestartPolicy) -> Self {
        policy.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_like_docker() {
        for text in ["no", "always", "on-failure", "on-failure:3"] {
            assert_eq!(text.parse::<RestartPolicy>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "sometimes",
            "on-failure:0",
            "on-failure:x",
            "always:2",
            "no:1",
        ] {
            let error = bad.parse::<RestartPolicy>().unwrap_err();
            assert!(error.contains("use no, on-failure"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn restarts_follow_the_policy_and_stop_requests_win() {
        let on_failure = RestartPolicy::OnFailure {
            max_retries: Some(2),
        };
        assert!(on_failure.restarts_after(1, 0, false));
        assert!(on_failure.restarts_after(1, 1, false));
        assert!(!on_failure.restarts_after(1, 2, false), "two retries only");
        assert!(
            !on_failure.restarts_after(0, 0, false),
            "success is not a failure"
        );
        assert!(RestartPolicy::Always.restarts_after(0, 100, false));
        assert!(!RestartPolicy::Always.restarts_after(137, 0, true));
        assert!(!RestartPolicy::No.restarts_after(1, 0, false));
    }

    #[test]
    fn back_off_doubles_and_is_capped() {
        assert_eq!(RestartPolicy::delay(0), Duration::from_millis(100));
        assert_eq!(RestartPolicy::delay(3), Duration::from_millis(800));
        assert_eq!(RestartPolicy::delay(40), Duration::from_secs(60));
    }
}
