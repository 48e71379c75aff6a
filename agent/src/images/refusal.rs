//! What a registry or its token server says when it refuses credentials: the errors of its
//! JSON body (`unauthorized: authentication required`), a token server's `details`
//! (`incorrect username or password`), or the start of the body.
use reqwest::StatusCode;

/// The reason with the status: `unauthorized: authentication required (401 Unauthorized)`,
/// or the status alone when the body says nothing.
pub fn reason_of(status: StatusCode, body: &str) -> String {
    let said = said(body);
    if said.is_empty() {
        status.to_string()
    } else {
        format!("{said} ({status})")
    }
}

/// The reason in `body`; empty when it has none.
pub fn said(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let errors: Vec<String> = (json["errors"].as_array().into_iter().flatten())
        .map(|error| {
            let code = error["code"].as_str().unwrap_or_default().to_lowercase();
            let message = error["message"].as_str().unwrap_or_default();
            [code.as_str(), message]
                .into_iter()
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        })
        .filter(|text| !text.is_empty())
        .collect();
    if errors.is_empty() {
        json["details"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| body.trim().chars().take(200).collect())
    } else {
        errors.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_registry_reason() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(
            reason_of(StatusCode::UNAUTHORIZED, body),
            "unauthorized: authentication required (401 Unauthorized)"
        );
        assert_eq!(
            reason_of(
                StatusCode::UNAUTHORIZED,
                r#"{"details":"incorrect username or password"}"#
            ),
            "incorrect username or password (401 Unauthorized)"
        );
        assert_eq!(reason_of(StatusCode::FORBIDDEN, ""), "403 Forbidden");
        assert_eq!(said("  no such user\n"), "no such user");
        assert_eq!(said(""), "");
    }
}
