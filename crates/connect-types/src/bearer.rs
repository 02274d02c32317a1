//! The `authorization: Bearer <credential>` rule shared by both services: exactly one value, the
//! scheme compared without regard to case, a non-empty credential without surrounding space.

/// Why an `authorization` header is not a bearer credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("no authorization metadata")]
    Missing,
    #[error("more than one authorization value")]
    Repeated,
    #[error("authorization is not ASCII")]
    NotAscii,
    #[error("authorization is larger than {0} bytes")]
    TooLarge(usize),
    #[error("authorization is not 'Bearer <credential>'")]
    NotBearer,
}

/// The credential of the one `authorization` value among `values`, refusing anything longer
/// than `max_bytes` before looking inside it.
pub fn bearer_token<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
    max_bytes: usize,
) -> Result<&'a str, BearerError> {
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Repeated);
    }
    if value.len() > max_bytes + "Bearer ".len() {
        return Err(BearerError::TooLarge(max_bytes));
    }
    let text = std::str::from_utf8(value)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or(BearerError::NotAscii)?;
    match text.split_once(' ') {
        Some((scheme, credential)) if scheme.eq_ignore_ascii_case("bearer") => {
            let credential = credential.trim();
            if credential.is_empty() || credential.contains(' ') {
                Err(BearerError::NotBearer)
            } else {
                Ok(credential)
            }
        }
        _ => Err(BearerError::NotBearer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<&'static str, BearerError> {
        let owned: Vec<&'static [u8]> = values
            .iter()
            .map(|v| &*Box::leak(v.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        bearer_token(owned.into_iter(), 64)
    }

    #[test]
    fn exactly_one_bearer_value_is_accepted() {
        assert_eq!(parse(&["Bearer abc"]), Ok("abc"));
        assert_eq!(parse(&["bearer abc "]), Ok("abc"));
        assert_eq!(parse(&[]), Err(BearerError::Missing));
        assert_eq!(parse(&["Basic abc"]), Err(BearerError::NotBearer));
        assert_eq!(parse(&["abc"]), Err(BearerError::NotBearer));
        assert_eq!(parse(&["Bearer "]), Err(BearerError::NotBearer));
        assert_eq!(parse(&["Bearer a b"]), Err(BearerError::NotBearer));
        assert_eq!(parse(&["Bearer a", "Bearer b"]), Err(BearerError::Repeated));
        assert_eq!(
            parse(&[&format!("Bearer {}", "x".repeat(65))]),
            Err(BearerError::TooLarge(64))
        );
    }
}
