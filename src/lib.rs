//! The Connect v1 API as Rust types: the generated messages, clients and servers of
//! `connect.registry.v1` (`LinkRegistry`, the admin API, and `RegistryRuntime`, what brokers ask)
//! and `connect.broker.v1`, and the file descriptor set that both servers
//! hand to gRPC reflection so `grpcurl` works without `.proto` files.
//!
//! Fields that carry secrets or tokens are marked `[(connect.options.v1.secret) = true]` in the
//! `.proto` files; `build.rs` writes the `Debug` of every message holding one, printing such a
//! field as `<redacted>` (a map: its keys), so that a `?request` in a log line can never leak one.

use std::fmt;

pub use prost;
pub use prost_types;
pub use tonic;

/// `connect.registry.v1`: the link registry.
pub mod registry {
    pub mod v1 {
        tonic::include_proto!("connect.registry.v1");
    }
}

/// `connect.broker.v1`: the token broker.
pub mod broker {
    pub mod v1 {
        tonic::include_proto!("connect.broker.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Connect proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("connect_descriptor");

/// A secret map in `Debug` output: its keys, each value `<redacted>`.
struct RedactedMap<'a, I>(&'a I);

impl<'a, I, K, V> fmt::Debug for RedactedMap<'a, I>
where
    &'a I: IntoIterator<Item = (&'a K, &'a V)>,
    K: fmt::Debug + 'a,
    V: 'a,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.into_iter().map(|(k, _)| (k, "<redacted>")))
            .finish()
    }
}

/// A secret string in `Debug` output: `<redacted>`, or `""` when it is empty (whether it was
/// sent is worth seeing).
struct RedactedStr<'a>(&'a str);

impl fmt::Debug for RedactedStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

struct RedactedBytes<'a>(&'a [u8]);

impl fmt::Debug for RedactedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("[]")
        } else {
            f.write_str("<redacted>")
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/redacted_debug.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    use prost_reflect::{
        DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MapKey,
        MessageDescriptor, Value,
    };

    const SENTINEL: &str = "s3cr3t-sentinel";

    fn pool() -> (DescriptorPool, ExtensionDescriptor) {
        let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap();
        let secret = pool
            .get_extension_by_name("connect.options.v1.secret")
            .expect("the secret option is served by reflection");
        (pool, secret)
    }

    fn is_secret(field: &FieldDescriptor, secret: &ExtensionDescriptor) -> bool {
        field.options().get_extension(secret).as_bool() == Some(true)
    }

    /// Messages of `message`'s type that each hold the sentinel in one secret field: directly, or
    /// in a message nested up to `depth` levels down (every oneof member in turn).
    fn samples(
        message: &MessageDescriptor,
        secret: &ExtensionDescriptor,
        depth: usize,
    ) -> Vec<DynamicMessage> {
        let mut out = Vec::new();
        for field in message.fields() {
            let mut values = Vec::new();
            if is_secret(&field, secret) {
                values.push(if field.is_map() {
                    Value::Map(
                        [(
                            MapKey::String("api_key".into()),
                            Value::String(SENTINEL.into()),
                        )]
                        .into(),
                    )
                } else if field.kind() == Kind::Bytes {
                    Value::Bytes(SENTINEL.as_bytes().to_vec().into())
                } else {
                    Value::String(SENTINEL.into())
                });
            } else if let (Kind::Message(nested), false, true) =
                (field.kind(), field.is_map(), depth > 0)
            {
                for sample in samples(&nested, secret, depth - 1) {
                    let value = Value::Message(sample);
                    values.push(if field.is_list() {
                        Value::List(vec![value])
                    } else {
                        value
                    });
                }
            }
            for value in values {
                let mut sample = DynamicMessage::new(message.clone());
                sample.set_field(&field, value);
                out.push(sample);
            }
        }
        out
    }

    #[test]
    fn no_message_prints_a_field_marked_secret_however_deep() {
        use prost::Message;
        let (pool, secret) = pool();
        let mut checked = 0;
        for message in pool
            .all_messages()
            .filter(|m| m.package_name().starts_with("connect.") && !m.is_map_entry())
        {
            for sample in samples(&message, &secret, 3) {
                let printed = debug_of(message.full_name(), &sample.encode_to_vec())
                    .unwrap_or_else(|| panic!("{} has no generated type", message.full_name()));
                assert!(
                    !printed.contains(SENTINEL),
                    "{} prints a secret: {printed}",
                    message.full_name()
                );
                assert!(printed.contains("<redacted>"), "{printed}");
                checked += 1;
            }
        }
        // Every marked field of both APIs, and messages that nest them (e.g. a lease answer).
        assert!(checked >= 25, "only {checked} samples");
        let lease = registry::v1::LeaseGrantResponse {
            answer: Some(registry::v1::lease_grant_response::Answer::Leased(
                registry::v1::GrantLease {
                    refresh_token: SENTINEL.into(),
                    lease_id: "lease_1".into(),
                    ..Default::default()
                },
            )),
        };
        let printed = format!("{lease:?}");
        assert!(
            printed.contains("lease_1") && !printed.contains(SENTINEL),
            "{printed}"
        );
    }

    #[test]
    fn every_field_named_like_a_credential_is_marked_secret() {
        let (pool, secret) = pool();
        // Names that look like credentials but carry none.
        let not_secret = [
            "page_token",
            "next_page_token",
            "token_id",
            "token_type",
            "token_url",
            "revocation_url",
            "secret_names",
            "secret_keys",
            "required_secret_keys",
        ];
        let looks_secret = |name: &str| {
            ["token", "secret", "verifier", "password", "private_key"]
                .iter()
                .any(|w| name.contains(w))
                && !not_secret.contains(&name)
        };
        for message in pool
            .all_messages()
            .filter(|m| m.package_name().starts_with("connect."))
        {
            for field in message.fields() {
                let name = field.name();
                let textual = matches!(field.kind(), Kind::String) || field.is_map();
                if textual && looks_secret(name) {
                    assert!(
                        is_secret(&field, &secret),
                        "{} looks like a credential but is not marked secret",
                        field.full_name()
                    );
                }
            }
        }
    }

    #[test]
    fn redacted_fields_still_say_whether_they_were_sent() {
        let empty = broker::v1::GetTokenResponse {
            token_id: "tid_1".to_owned(),
            ..Default::default()
        };
        let printed = format!("{empty:?}");
        assert!(
            printed.contains("token: \"\"") && printed.contains("tid_1"),
            "{printed}"
        );
        let response = registry::v1::AuthorizeResponse {
            secrets: [("api_key".to_owned(), "sk_live_hunter2".to_owned())].into(),
            ..Default::default()
        };
        let printed = format!("{response:?}");
        assert!(printed.contains("\"api_key\": \"<redacted>\""), "{printed}");
    }

    #[test]
    fn descriptor_set_names_every_service() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        assert!(services.contains(&"connect.registry.v1.LinkRegistry".to_owned()));
        assert!(services.contains(&"connect.registry.v1.RegistryRuntime".to_owned()));
        assert!(services.contains(&"connect.broker.v1.TokenBroker".to_owned()));
    }
}
