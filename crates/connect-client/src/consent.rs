//! Users' consents, in the two steps the broker requires: [`ConnectClient::start_consent`] gives
//! the provider's page to send the user to; the browser comes back to the application's
//! `return_url` with `connect_request_id` and `connect_completion`, which
//! [`ConnectClient::finish_consent`] hands back, with the user signed in to the application now.
//! The grant is stored only when that is the user the consent was started for.
//!
//! ```no_run
//! use connect_client::{ConnectClient, Error};
//!
//! # async fn run(connect: ConnectClient, signed_in: &str, query: std::collections::HashMap<String, String>) -> Result<(), Error> {
//! // Settings page: "Connect your CRM".
//! let started = connect
//!     .start_consent("oauth2/crm", signed_in, "https://app.example/settings/connected")
//!     .await?;
//! println!("redirect the browser to {}", started.url);
//!
//! // GET /settings/connected?connect_request_id=…&connect_completion=…
//! match connect
//!     .finish_consent(&query["connect_request_id"], &query["connect_completion"], signed_in)
//!     .await
//! {
//!     Ok(grant) => println!("connected for {}", grant.user_id),
//!     Err(Error::ConsentUserMismatch(_)) => println!("this link was started by another account"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```

use std::time::SystemTime;

use connect_proto::broker::v1 as pb;

use crate::{ConnectClient, Error, authorize, system_time};

/// A consent under way: where to send the user.
#[derive(Clone, Debug)]
pub struct StartedConsent {
    /// The provider's consent page.
    pub url: String,
    /// Comes back as `connect_request_id`.
    pub request_id: String,
    pub expires_at: Option<SystemTime>,
    /// The connector's callback, as registered at the provider.
    pub redirect_uri: String,
}

/// A stored grant (its tokens stay in Connect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The project whose deployments use it; empty: every linked project of the team.
    pub project: String,
    pub connector_id: String,
    pub connector_uid: String,
    pub user_id: String,
    pub environment: String,
    pub installation_id: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<SystemTime>,
    pub refreshable: bool,
    /// The provider account the grant acts as; empty when the provider named none.
    pub provider_subject: String,
}

impl ConnectClient {
    /// Starts `user_id`'s consent for `connector`; the browser comes back to `return_url`
    /// (`https://`) with the two query parameters [`ConnectClient::finish_consent`] needs.
    pub async fn start_consent(
        &self,
        connector: &str,
        user_id: &str,
        return_url: &str,
    ) -> Result<StartedConsent, Error> {
        let oidc = self.inner.oidc.current()?;
        let mut request = tonic::Request::new(pb::StartAuthorizationRequest {
            connector: connector.to_owned(),
            user_id: user_id.to_owned(),
            return_url: return_url.to_owned(),
            ..Default::default()
        });
        request.set_timeout(self.inner.timeout);
        authorize(&mut request, &oidc)?;
        let started = self
            .inner
            .broker
            .clone()
            .start_authorization(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        Ok(StartedConsent {
            url: started.url,
            request_id: started.request_id,
            expires_at: started.expires_at.and_then(system_time),
            redirect_uri: started.redirect_uri,
        })
    }

    /// Finishes the consent the browser came back with (`connect_request_id`,
    /// `connect_completion`) as `user_id`, the user signed in now. Another user than the one it
    /// was started for: [`Error::ConsentUserMismatch`] (and the consent is discarded). A consent
    /// that signed in at the provider as another account than the user's grant acts as:
    /// [`Error::ProviderAccountChanged`] (the consent stays pending; confirm the new account with
    /// [`ConnectClient::finish_consent_confirming`]).
    pub async fn finish_consent(
        &self,
        request_id: &str,
        completion: &str,
        user_id: &str,
    ) -> Result<Grant, Error> {
        self.finish_consent_confirming(request_id, completion, user_id, "")
            .await
    }

    /// As [`ConnectClient::finish_consent`], confirming for `user_id` the provider account
    /// `provider_subject` (named in the [`Error::ProviderAccountChanged`] of a first try), so
    /// that it replaces the account the user's grant acted as.
    pub async fn finish_consent_confirming(
        &self,
        request_id: &str,
        completion: &str,
        user_id: &str,
        provider_subject: &str,
    ) -> Result<Grant, Error> {
        let oidc = self.inner.oidc.current()?;
        let mut request = tonic::Request::new(pb::FinishAuthorizationRequest {
            request_id: request_id.to_owned(),
            completion: completion.to_owned(),
            user_id: user_id.to_owned(),
            confirm_provider_subject: provider_subject.to_owned(),
        });
        request.set_timeout(self.inner.timeout);
        authorize(&mut request, &oidc)?;
        let grant = self
            .inner
            .broker
            .clone()
            .finish_authorization(request)
            .await
            .map_err(|status| self.error(&status))?
            .into_inner()
            .grant
            .unwrap_or_default();
        Ok(Grant {
            project: grant.project,
            connector_id: grant.connector_id,
            connector_uid: grant.connector_uid,
            user_id: grant.user_id,
            environment: grant.environment,
            installation_id: grant.installation_id,
            scopes: grant.scopes,
            expires_at: grant.expire_time.and_then(system_time),
            refreshable: grant.refreshable,
            provider_subject: grant.provider_subject,
        })
    }
}
