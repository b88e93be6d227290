"""Drives sandpool's management API with the official azure-mgmt-appcontainers SDK.

Environment: SANDPOOL_ENDPOINT (https base URL), SANDPOOL_SUBSCRIPTION, SANDPOOL_RESOURCE_GROUP,
SANDPOOL_VERIFY_TLS (0 = accept a self-signed certificate), and the credential: either
SANDPOOL_ADMIN_FILE (the server's admin.json; the client then signs in as a user would, through
azure-identity's ClientSecretCredential against the server's token endpoint) or SANDPOOL_TOKEN (a
bearer token handed out as is). Exits non-zero with a message on the first mismatch.
"""
import base64
import json
import os
import sys
import time

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError, HttpResponseError
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.appcontainers import models as m


class StaticToken:
    """A credential that hands out the token from the environment."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def claims(token):
    """The payload of a JWT, unverified: the server checks signatures, this only reads fields."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def secret_credential(endpoint, admin, verify, secret=None):
    """What a user's code does: MSAL client credentials, with the server as the authority."""
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(
        admin["tenantId"],
        admin["clientId"],
        secret if secret is not None else admin["clientSecret"],
        # The server is its own authority: MSAL reads {authority}/{tenant}/v2.0/.well-known/
        # openid-configuration from it, and must not ask login.microsoftonline.com about it.
        authority=endpoint,
        disable_instance_discovery=True,
        connection_verify=verify,
    )


def signed_in_credential(endpoint, admin_file, verify):
    """Checks the tokens ClientSecretCredential gets, then answers it for the SDK client."""
    with open(admin_file) as f:
        admin = json.load(f)
    cred = secret_credential(endpoint, admin, verify)
    for scope, audience in [
        ("https://management.azure.com/.default", "https://management.azure.com/"),
        ("https://dynamicsessions.io/.default", "https://dynamicsessions.io"),
    ]:
        token = cred.get_token(scope)
        check(token.expires_on > time.time(), f"{scope}: token already expired")
        c = claims(token.token)
        check(c.get("aud") == audience, f"{scope}: aud {c.get('aud')}")
        check(c.get("tid") == admin["tenantId"], f"{scope}: tid {c.get('tid')}")
        check(c.get("oid") == admin["principalId"], f"{scope}: oid {c.get('oid')}")
    try:
        secret_credential(endpoint, admin, verify, secret="not-the-secret").get_token(
            "https://management.azure.com/.default"
        )
        check(False, "a wrong client secret got a token")
    except ClientAuthenticationError:
        pass
    return cred


def main():
    endpoint = os.environ["SANDPOOL_ENDPOINT"]
    sub = os.environ["SANDPOOL_SUBSCRIPTION"]
    rg = os.environ["SANDPOOL_RESOURCE_GROUP"]
    verify = os.environ.get("SANDPOOL_VERIFY_TLS", "1") != "0"
    admin_file = os.environ.get("SANDPOOL_ADMIN_FILE")
    if admin_file:
        credential = signed_in_credential(endpoint, admin_file, verify)
    else:
        credential = StaticToken(os.environ["SANDPOOL_TOKEN"])
    client = ContainerAppsAPIClient(
        credential=credential,
        subscription_id=sub,
        base_url=endpoint,
        connection_verify=verify,
    )
    pools = client.container_apps_session_pools
    name = "sdk-pool"

    pool = m.SessionPool(
        location="westus",
        properties=m.SessionPoolProperties(
            container_type="Shell",
            pool_management_type="Dynamic",
            scale_configuration=m.ScaleConfiguration(max_concurrent_sessions=5, ready_session_instances=1),
            dynamic_pool_configuration=m.DynamicPoolConfiguration(
                lifecycle_configuration=m.LifecycleConfiguration(lifecycle_type="Timed", cooldown_period_in_seconds=120)
            ),
            session_network_configuration=m.SessionNetworkConfiguration(status="EgressDisabled"),
        ),
    )
    created = pools.begin_create_or_update(rg, name, pool, polling_interval=0).result()
    check(created.name == name, f"created name {created.name}")
    check(created.properties.provisioning_state == "Succeeded", f"state {created.properties.provisioning_state}")
    check(created.properties.pool_management_endpoint.endswith(f"/resourceGroups/{rg}/sessionPools/{name}"),
          f"endpoint {created.properties.pool_management_endpoint}")

    got = pools.get(rg, name)
    check(got.properties.scale_configuration.max_concurrent_sessions == 5, "max sessions after get")
    check(got.properties.dynamic_pool_configuration.lifecycle_configuration.cooldown_period_in_seconds == 120, "cooldown")

    by_rg = [p.name for p in pools.list_by_resource_group(rg)]
    check(name in by_rg, f"list_by_resource_group {by_rg}")
    by_sub = [p.name for p in pools.list_by_subscription()]
    check(name in by_sub, f"list_by_subscription {by_sub}")

    update = m.SessionPoolUpdatableProperties(
        properties=m.SessionPoolUpdatablePropertiesProperties(
            scale_configuration=m.ScaleConfiguration(max_concurrent_sessions=8, ready_session_instances=2)
        )
    )
    updated = pools.begin_update(rg, name, update, polling_interval=0).result()
    check(updated.properties.scale_configuration.max_concurrent_sessions == 8, "max sessions after update")
    check(pools.get(rg, name).properties.scale_configuration.ready_session_instances == 2, "ready after update")

    try:
        pools.begin_create_or_update(
            rg, "bad", m.SessionPool(location="westus", properties=m.SessionPoolProperties(pool_management_type="Manual")),
            polling_interval=0,
        ).result()
        check(False, "Manual pool accepted")
    except HttpResponseError as e:
        check(e.status_code == 400, f"Manual pool status {e.status_code}")
        check(e.error is not None and e.error.code == "UnsupportedPoolManagementType", f"error code {e.error}")

    pools.begin_delete(rg, name, polling_interval=0).result()
    try:
        pools.get(rg, name)
        check(False, "pool still there after delete")
    except ResourceNotFoundError:
        pass
    print("ok")


if __name__ == "__main__":
    main()
