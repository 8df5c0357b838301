"""A browser logs in at the master's own authorization server (code + PKCE S256) before a token is stored for it.

Who the person is comes from the access token the AS issues to the master's own client for the master's resource,
verified like any inbound token: the same issuer, audience and signature checks.
"""

from __future__ import annotations

from master_mcp.auth.inbound import principal_from
from master_mcp.auth.oauth_client import OAuthError, authorization_url, exchange_code
from master_mcp.auth.oauth_verifier import MasterProvider, OAuthTokenVerifier
from master_mcp.auth.principal import Principal


class MasterLogin:
    def __init__(self, provider: MasterProvider, verifier: OAuthTokenVerifier, *, resource: str) -> None:
        self.provider = provider
        self.verifier = verifier
        self.resource = resource

    def redirect_uri(self, callback_url: str) -> str:
        return self.provider.settings.redirect_uri or callback_url

    async def authorization_request(self, state: str, code_challenge: str, callback_url: str) -> str:
        endpoints = await self.provider.endpoints()
        client = self.provider.client
        if client is None or endpoints.authorization_endpoint is None:
            raise OAuthError("logging in needs master.auth.client_id and an authorization endpoint")
        extra = {"resource": self.resource}
        if self.provider.settings.scopes:
            extra["scope"] = " ".join(self.provider.settings.scopes)
        redirect_uri = self.redirect_uri(callback_url)
        return authorization_url(
            endpoints.authorization_endpoint, client.client_id, redirect_uri, state, code_challenge, extra
        )

    async def principal(self, code: str, code_verifier: str, callback_url: str) -> Principal:
        """Who logged in: the code exchanged, the token verified; `OAuthError` when either fails."""
        endpoints = await self.provider.endpoints()
        client = self.provider.client
        if client is None or endpoints.token_endpoint is None:
            raise OAuthError("logging in needs master.auth.client_id and a token endpoint")
        token = await exchange_code(
            self.provider.http,
            endpoints.token_endpoint,
            client,
            code=code,
            code_verifier=code_verifier,
            redirect_uri=self.redirect_uri(callback_url),
            resource=self.resource,
        )
        access = await self.verifier.verify_token(token.access_token)
        if access is None:
            raise OAuthError("the authorization server issued a login token the master does not accept")
        principal = principal_from(access)
        return Principal(issuer=principal.issuer, subject=principal.subject)
