//! The Connect v1 API as Rust types: the generated messages, clients and servers of
//! `connect.registry.v1` (`LinkRegistry`, the admin API, and `RegistryRuntime`, what brokers ask)
//! and `connect.broker.v1`, and the file descriptor set that both servers
//! hand to gRPC reflection so `grpcurl` works without `.proto` files.
//!
//! Messages that carry secrets or tokens have a hand-written `Debug` that prints only their
//! names, so that a `?request` in a log line can never leak one.

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

/// Lists map keys and hides their values.
struct Redacted<'a, I>(&'a I);

impl<'a, I, K, V> fmt::Debug for Redacted<'a, I>
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

impl fmt::Debug for registry::v1::AuthorizeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeResponse")
            .field("connector", &self.connector)
            .field("link", &self.link)
            .field("secrets", &Redacted(&self.secrets))
            .finish()
    }
}

impl fmt::Debug for registry::v1::CreateConnectorRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateConnectorRequest")
            .field("uid", &self.uid)
            .field("type", &self.r#type)
            .field("name", &self.name)
            .field("config", &self.config)
            .field("secrets", &Redacted(&self.secrets))
            .finish()
    }
}

impl fmt::Debug for registry::v1::UpdateConnectorRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateConnectorRequest")
            .field("connector", &self.connector)
            .field("name", &self.name)
            .field("config", &self.config)
            .field("secrets", &Redacted(&self.secrets))
            .field("update_mask", &self.update_mask)
            .finish()
    }
}

impl fmt::Debug for broker::v1::GetTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetTokenResponse")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .field("connector", &self.connector)
            .field("installation_id", &self.installation_id)
            .field("scopes", &self.scopes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_secret_bearing_messages_hides_the_values() {
        let response = registry::v1::AuthorizeResponse {
            secrets: [("api_key".to_owned(), "sk_live_hunter2".to_owned())].into(),
            ..Default::default()
        };
        let printed = format!("{response:?}");
        assert!(printed.contains("api_key"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");

        let token = broker::v1::GetTokenResponse {
            token: "tok_secret_value".to_owned(),
            token_id: "tid_1".to_owned(),
            ..Default::default()
        };
        let printed = format!("{token:?}");
        assert!(printed.contains("tid_1"), "{printed}");
        assert!(!printed.contains("tok_secret_value"), "{printed}");
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
