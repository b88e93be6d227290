//! The management API over real HTTP, against SQLite and PostgreSQL both.

mod common;

use common::*;
use reqwest::Method;
use sandpool_server::testing::{TestServer, TestStore};
use serde_json::{json, Value};

both_stores!(
    resource_groups,
    session_pools,
    pool_validation,
    conventions,
    identities,
    managed_clusters,
    cascade_delete,
    role_assignments,
    role_definitions,
    tutorial_deployment,
    deployment_errors,
    defaults_and_restart,
    operations_endpoints,
);

async fn resource_groups(store: TestStore) {
    let api = Api::start(store).await;
    let path = format!("/subscriptions/{SUB}/resourcegroups/My-RG");
    let r = api
        .put(&path, json!({"location": "West US", "tags": {"a": "b"}}))
        .await;
    r.assert_status(201);
    assert_eq!(
        r.json["id"],
        format!("/subscriptions/{SUB}/resourceGroups/My-RG")
    );
    assert_eq!(r.json["location"], "westus");
    assert_eq!(r.json["properties"]["provisioningState"], "Succeeded");
    assert!(r.json["systemData"]["createdAt"].is_string());
    // Names are case-insensitive; the first spelling stays canonical.
    let r = api
        .put(
            &format!("/SUBSCRIPTIONS/{SUB}/RESOURCEGROUPS/my-rg"),
            json!({"location": "westus"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.json["name"], "My-RG");
    let r = api
        .get(&format!("/subscriptions/{SUB}/resourceGroups/MY-rg"))
        .await;
    r.assert_status(200);
    assert_eq!(r.json["name"], "My-RG");
    let r = api
        .get(&format!("/subscriptions/{SUB}/resourcegroups"))
        .await;
    r.assert_status(200);
    assert_eq!(r.json["value"].as_array().map(Vec::len), Some(1));
    assert!(r.json.get("nextLink").is_some_and(Value::is_null));
    api.put(&path, json!({}))
        .await
        .assert_error(400, "LocationRequired");
    api.put(
        &format!("/subscriptions/{SUB}/resourcegroups/bad%20name"),
        json!({"location": "x"}),
    )
    .await
    .assert_error(400, "InvalidResourceGroupName");
    api.put(
        "/subscriptions/not-a-uuid/resourcegroups/x",
        json!({"location": "x"}),
    )
    .await
    .assert_error(400, "InvalidSubscriptionId");

    let d = api.delete(&path).await;
    d.assert_status(202);
    api.poll_location(&d).await.assert_status(200);
    api.get(&path)
        .await
        .assert_error(404, "ResourceGroupNotFound");
    api.delete(&path)
        .await
        .assert_error(404, "ResourceGroupNotFound");
}

async fn session_pools(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg1").await;
    let path = pool_path("rg1", "pool-1");
    let r = api
        .put(&path, json!({"location": "westus", "properties": {"containerType": "Shell", "scaleConfiguration": {"maxConcurrentSessions": 5}}}))
        .await;
    r.assert_status(201);
    let p = &r.json["properties"];
    assert_eq!(r.json["type"], "Microsoft.App/sessionPools");
    assert_eq!(p["poolManagementType"], "Dynamic");
    assert_eq!(p["provisioningState"], "Succeeded");
    assert_eq!(p["scaleConfiguration"]["maxConcurrentSessions"], 5);
    assert_eq!(
        p["dynamicPoolConfiguration"]["lifecycleConfiguration"]["lifecycleType"],
        "Timed"
    );
    assert_eq!(
        p["dynamicPoolConfiguration"]["lifecycleConfiguration"]["cooldownPeriodInSeconds"],
        300
    );
    assert_eq!(p["sessionNetworkConfiguration"]["status"], "EgressDisabled");
    assert_eq!(
        p["poolManagementEndpoint"],
        format!(
            "{}/subscriptions/{SUB}/resourceGroups/rg1/sessionPools/pool-1",
            api.srv.base_url
        )
    );

    // Mixed-case segments reach the same resource.
    let mixed = format!(
        "/subscriptions/{SUB}/RESOURCEGROUPS/RG1/providers/microsoft.app/SESSIONPOOLS/pool-1"
    );
    let g = api.get(&mixed).await;
    g.assert_status(200);
    assert_eq!(g.json["id"], r.json["id"]);

    let r = api.put(&path, json!({"location": "westus", "properties": {"scaleConfiguration": {"maxConcurrentSessions": 7}}})).await;
    r.assert_status(200);
    assert_eq!(
        r.json["properties"]["scaleConfiguration"]["maxConcurrentSessions"],
        7
    );
    assert_eq!(
        r.json["systemData"]["createdAt"],
        g.json["systemData"]["createdAt"]
    );

    let r = api
        .patch(&path, json!({"properties": {"scaleConfiguration": {"readySessionInstances": 3}, "sessionNetworkConfiguration": {"status": "EgressEnabled"}}}))
        .await;
    r.assert_status(200);
    assert_eq!(
        r.json["properties"]["scaleConfiguration"]["maxConcurrentSessions"],
        7
    );
    assert_eq!(
        r.json["properties"]["scaleConfiguration"]["readySessionInstances"],
        3
    );
    assert_eq!(
        r.json["properties"]["sessionNetworkConfiguration"]["status"],
        "EgressEnabled"
    );
    api.patch(
        &path,
        json!({"properties": {"scaleConfiguration": {"readySessionInstances": 8}}}),
    )
    .await
    .assert_error(400, "InvalidParameter");
    api.patch(&pool_path("rg1", "nope"), json!({}))
        .await
        .assert_error(404, "ResourceNotFound");

    api.group("rg2").await;
    api.put(&pool_path("rg2", "other"), json!({"location": "westus"}))
        .await
        .assert_status(201);
    let l = api
        .get(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.App/sessionPools"
        ))
        .await;
    l.assert_status(200);
    assert_eq!(l.json["value"].as_array().map(Vec::len), Some(1));
    let l = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.App/sessionPools"
        ))
        .await;
    assert_eq!(l.json["value"].as_array().map(Vec::len), Some(2));

    // The data plane answers below the management endpoint, whatever the segments' case.
    let ep = format!("/subscriptions/{SUB}/resourceGroups/rg1/SESSIONPOOLS/pool-1");
    let sessions = api.get(&format!("{ep}/listSessions")).await;
    sessions.assert_status(200);
    assert_eq!(sessions.json["count"], json!(0));
    api.get(&format!("{ep}/session?identifier=ab"))
        .await
        .assert_error(400, "InvalidSessionIdentifier");
    api.get(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/sessionPools/absent/files"
    ))
    .await
    .assert_error(404, "ResourceNotFound");

    let d = api.delete(&path).await;
    d.assert_status(202);
    api.poll_location(&d).await.assert_status(200);
    api.get(&path).await.assert_error(404, "ResourceNotFound");
    api.delete(&path).await.assert_status(204);
}

async fn pool_validation(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg").await;
    let ok = pool_path("rg", "p");
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (
            ok.clone(),
            json!({"properties": {}}),
            400,
            "LocationRequired",
        ),
        (
            ok.clone(),
            json!({"location": "x", "properties": {"poolManagementType": "Manual"}}),
            400,
            "UnsupportedPoolManagementType",
        ),
        (
            ok.clone(),
            json!({"location": "x", "properties": {"containerType": "PythonLTS"}}),
            400,
            "UnsupportedContainerType",
        ),
        (
            ok.clone(),
            json!({"location": "x", "properties": {"scaleConfiguration": {"maxConcurrentSessions": "many"}}}),
            400,
            "InvalidRequestContent",
        ),
        (
            ok.clone(),
            json!({"location": "x", "properties": {"scaleConfiguration": {"maxConcurrentSessions": 2, "readySessionInstances": 3}}}),
            400,
            "InvalidParameter",
        ),
        (
            ok.clone(),
            json!({"location": "x", "properties": {"sessionNetworkConfiguration": {"status": "Wide"}}}),
            400,
            "InvalidRequestContent",
        ),
        (
            ok.clone(),
            json!({"location": 5}),
            400,
            "InvalidRequestContent",
        ),
        (ok.clone(), json!([1, 2]), 400, "InvalidRequestContent"),
        (
            pool_path("rg", "Bad_Name"),
            json!({"location": "x"}),
            400,
            "InvalidResourceName",
        ),
        (
            pool_path("rg", &"a".repeat(64)),
            json!({"location": "x"}),
            400,
            "InvalidResourceName",
        ),
        (
            pool_path("rg", "a%2Fb"),
            json!({"location": "x"}),
            400,
            "InvalidResourceName",
        ),
        (
            pool_path("missing", "p"),
            json!({"location": "x"}),
            404,
            "ResourceGroupNotFound",
        ),
    ];
    for (path, body, status, code) in cases {
        api.put(&path, body).await.assert_error(status, code);
    }
    let m = api
        .put(
            &ok,
            json!({"location": "x", "properties": {"poolManagementType": "Manual"}}),
        )
        .await;
    assert!(m.json["error"]["message"]
        .as_str()
        .is_some_and(|s| s.contains("Dynamic")));
    let c = api
        .put(
            &ok,
            json!({"location": "x", "properties": {"containerType": "NodeLTS"}}),
        )
        .await;
    assert!(c.json["error"]["message"]
        .as_str()
        .is_some_and(|s| s.contains("Shell")));
    // Both lifecycle shapes.
    let r = api
        .put(&ok, json!({"location": "x", "properties": {"dynamicPoolConfiguration": {"executionType": "Timed", "cooldownPeriodInSeconds": 60}}}))
        .await;
    r.assert_status(201);
    assert_eq!(
        r.json["properties"]["dynamicPoolConfiguration"]["lifecycleConfiguration"]
            ["cooldownPeriodInSeconds"],
        60
    );
    let r = api
        .put(&ok, json!({"location": "x", "properties": {"dynamicPoolConfiguration": {"lifecycleConfiguration": {"lifecycleType": "OnContainerExit", "maxAlivePeriodInSeconds": 600}}}}))
        .await;
    r.assert_status(200);
    assert_eq!(
        r.json["properties"]["dynamicPoolConfiguration"]["lifecycleConfiguration"]
            ["maxAlivePeriodInSeconds"],
        600
    );
    // A resource named like a keyword is not rewritten.
    api.put(&pool_path("rg", "sessionpools"), json!({"location": "x"}))
        .await
        .assert_status(201);
    let g = api.get(&format!("/subscriptions/{SUB}/resourcegroups/rg/providers/microsoft.app/sessionpools/sessionpools")).await;
    assert_eq!(g.json["name"], "sessionpools");
}

async fn conventions(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg").await;
    let base = &api.srv.base_url;
    let rg = format!("{base}/subscriptions/{SUB}/resourceGroups/rg");
    api.raw(Method::GET, &rg, None, &[])
        .await
        .assert_error(400, "MissingApiVersionParameter");
    api.raw(Method::GET, &format!("{rg}?api-version=2024"), None, &[])
        .await
        .assert_error(400, "InvalidApiVersionParameter");
    api.raw(
        Method::GET,
        &format!("{rg}?api-version=2024-01-01"),
        None,
        &[],
    )
    .await
    .assert_status(200);
    api.raw(
        Method::GET,
        &format!("{rg}?api-version=2024-01-01-preview"),
        None,
        &[],
    )
    .await
    .assert_status(200);

    let echo = api
        .raw(
            Method::GET,
            &api.url(&format!("/subscriptions/{SUB}/resourceGroups/rg")),
            None,
            &[("x-ms-client-request-id", "abc-123")],
        )
        .await;
    assert_eq!(echo.header("x-ms-client-request-id"), Some("abc-123"));

    let pool = api.url(&pool_path("rg", "p"));
    api.raw(Method::PUT, &pool, Some(b"{\"location\": ".to_vec()), &[])
        .await
        .assert_error(400, "InvalidRequestContent");
    api.raw(Method::PUT, &pool, Some(b"".to_vec()), &[])
        .await
        .assert_error(400, "InvalidRequestContent");
    api.raw(
        Method::PUT,
        &pool,
        Some(b"{\"location\":\"x\",\"tags\":[1]}".to_vec()),
        &[],
    )
    .await
    .assert_error(400, "InvalidRequestContent");
    let big = format!(
        "{{\"location\":\"x\",\"tags\":{{\"a\":\"{}\"}}}}",
        "x".repeat(5 * 1024 * 1024)
    );
    api.raw(Method::PUT, &pool, Some(big.into_bytes()), &[])
        .await
        .assert_error(413, "PayloadTooLarge");

    api.get("/no/such/route")
        .await
        .assert_error(404, "NotFound");
    api.get(&pool_path("rg", "absent"))
        .await
        .assert_error(404, "ResourceNotFound");
    api.call(
        Method::POST,
        &format!("/subscriptions/{SUB}/resourceGroups/rg"),
        Some(json!({})),
    )
    .await
    .assert_error(405, "MethodNotAllowed");
    let r = api
        .raw(Method::PUT, &format!("{base}/healthz"), None, &[])
        .await;
    r.assert_error(405, "MethodNotAllowed");
    // RFC 9110 §15.5.6: a 405 names the allowed methods (found by schemathesis), on the
    // routed paths and on the scope paths the fallback dispatches alike.
    assert_eq!(r.header("allow"), Some("GET,HEAD"));
    let scoped = [
        ("/providers/Microsoft.Authorization/roleAssignments", "GET"),
        (
            "/providers/Microsoft.Authorization/roleAssignments/11111111-1111-1111-1111-111111111111",
            "GET, PUT, DELETE",
        ),
        ("/providers/Microsoft.Authorization/roleDefinitions", "GET"),
    ];
    for (path, allow) in scoped {
        let r = api
            .raw(Method::TRACE, &format!("{base}{path}?{V}"), None, &[])
            .await;
        r.assert_error(405, "MethodNotAllowed");
        // Role assignments and definitions are routes of their own at each scope: the router's
        // Allow lists the same methods (with HEAD for GET), in its own spelling.
        let mut got: Vec<String> = r
            .header("allow")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| m != "HEAD")
            .collect();
        let mut want: Vec<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{path}");
    }
    // The provider routes check the subscription id as every other route does, rather than
    // echoing it into resource ids (found by schemathesis: `null,null` answered 200).
    for path in [
        "/subscriptions/null,null/providers",
        "/subscriptions/null,null/providers/Microsoft.App",
    ] {
        api.get(path)
            .await
            .assert_error(400, "InvalidSubscriptionId");
    }
    api.call(
        Method::POST,
        "/subscriptions/not-a-uuid/providers/Microsoft.App/register",
        None,
    )
    .await
    .assert_error(400, "InvalidSubscriptionId");
}

async fn identities(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg").await;
    let path = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pool-uami");
    let r = api.put(&path, json!({"location": "westus"})).await;
    r.assert_status(201);
    for k in ["principalId", "clientId", "tenantId"] {
        let v = r.json["properties"][k].as_str().unwrap_or_default();
        assert!(sandpool_api::validate::is_uuid(v), "{k}: {v}");
    }
    let again = api
        .put(&path, json!({"location": "westus", "tags": {"x": "y"}}))
        .await;
    again.assert_status(200);
    // The client secret is answered by the creating PUT only.
    let mut created = r.json["properties"].clone();
    assert!(created["clientSecret"].is_string(), "{}", r.text);
    created.as_object_mut().map(|o| o.remove("clientSecret"));
    assert_eq!(again.json["properties"], created);
    let g = api
        .get(
            &path
                .to_uppercase()
                .replace(&SUB.to_uppercase(), SUB)
                .replace("POOL-UAMI", "pool-uami"),
        )
        .await;
    g.assert_status(200);
    let l = api.get(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities")).await;
    assert_eq!(l.json["value"].as_array().map(Vec::len), Some(1));
    api.put(&path.replace("pool-uami", "x"), json!({"location": "w"}))
        .await
        .assert_error(400, "InvalidResourceName");
    api.delete(&path).await.assert_status(200);
    api.delete(&path).await.assert_status(204);
    api.get(&path).await.assert_error(404, "ResourceNotFound");
}

async fn managed_clusters(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg").await;
    let path = format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/runner");
    let r = api.put(&path, json!({"location": "westus", "properties": {"kubeconfig": "apiVersion: v1\nkind: Config\n", "limits": {"memory": "256Mi"}}})).await;
    r.assert_status(201);
    assert!(
        !r.text.contains("kind: Config"),
        "kubeconfig leaked: {}",
        r.text
    );
    let p = &r.json["properties"];
    assert_eq!(p["hasKubeconfig"], true);
    assert_eq!(p["commandTimeoutInSeconds"], 300);
    assert_eq!(p["limits"]["memory"], "256Mi");
    assert_eq!(p["egress"], "Disabled");
    assert_eq!(p["provisioningState"], "Succeeded");
    // A PUT without kubeconfig keeps the stored one; GET never returns it.
    let r = api.put(&path, json!({"location": "westus", "properties": {"egress": "Enabled", "commandTimeoutInSeconds": 60}})).await;
    r.assert_status(200);
    assert_eq!(r.json["properties"]["hasKubeconfig"], true);
    let g = api.get(&path).await;
    assert!(g.json["properties"].get("kubeconfig").is_none());
    assert_eq!(g.json["properties"]["egress"], "Enabled");
    let r = api
        .put(
            &path,
            json!({"location": "westus", "properties": {"kubeconfig": ""}}),
        )
        .await;
    assert_eq!(r.json["properties"]["hasKubeconfig"], false);
    api.put(
        &path,
        json!({"location": "westus", "properties": {"egress": "Sometimes"}}),
    )
    .await
    .assert_error(400, "InvalidRequestContent");
    api.put(
        &path,
        json!({"location": "westus", "properties": {"limits": {"pids": -1}}}),
    )
    .await
    .assert_error(400, "InvalidRequestContent");
    api.put(&path, json!({"properties": {}}))
        .await
        .assert_error(400, "LocationRequired");
    let l = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.ContainerService/managedClusters"
        ))
        .await;
    assert_eq!(l.json["value"].as_array().map(Vec::len), Some(1));
    api.delete(&path).await.assert_status(200);
    api.get(&path).await.assert_error(404, "ResourceNotFound");
}

async fn cascade_delete(store: TestStore) {
    let api = Api::start(store).await;
    api.group("doomed").await;
    api.group("kept").await;
    let pool = pool_path("doomed", "p");
    let ident = format!("/subscriptions/{SUB}/resourceGroups/doomed/providers/Microsoft.ManagedIdentity/userAssignedIdentities/idy");
    let cluster = format!("/subscriptions/{SUB}/resourceGroups/doomed/providers/Microsoft.ContainerService/managedClusters/c1");
    let ra = format!("{pool}/providers/Microsoft.Authorization/roleAssignments/6f9a1b2c-0000-4000-8000-000000000001");
    api.put(&pool, json!({"location": "w"}))
        .await
        .assert_status(201);
    api.put(&pool_path("kept", "p"), json!({"location": "w"}))
        .await
        .assert_status(201);
    api.put(&ident, json!({"location": "w"}))
        .await
        .assert_status(201);
    api.put(
        &cluster,
        json!({"location": "w", "properties": {"kubeconfig": "k"}}),
    )
    .await
    .assert_status(201);
    api.put(&ra, json!({"properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/0fb8eba5-a2bb-4abe-b1c1-49dfad359bb0", "principalId": "6f9a1b2c-0000-4000-8000-0000000000aa"}}))
        .await
        .assert_status(201);
    let d = api
        .delete(&format!("/subscriptions/{SUB}/resourceGroups/DOOMED"))
        .await;
    api.poll_location(&d).await.assert_status(200);
    api.group("doomed").await;
    for p in [&pool, &ident, &cluster] {
        api.get(p).await.assert_error(404, "ResourceNotFound");
    }
    api.get(&ra).await.assert_error(404, "ResourceNotFound");
    api.get(&pool_path("kept", "p")).await.assert_status(200);
    // The kubeconfig secret went too: a new cluster of the same name has none.
    let c = api.put(&cluster, json!({"location": "w"})).await;
    assert_eq!(c.json["properties"]["hasKubeconfig"], false);
}

const EXECUTOR: &str = "0fb8eba5-a2bb-4abe-b1c1-49dfad359bb0";
const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

async fn role_assignments(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg").await;
    let pool = pool_path("rg", "p");
    api.put(&pool, json!({"location": "w"}))
        .await
        .assert_status(201);
    let principal = "aaaaaaaa-0000-4000-8000-000000000001";
    let at_pool = format!("{pool}/providers/Microsoft.Authorization/roleAssignments/11111111-0000-4000-8000-000000000001");
    let r = api
        .put(&at_pool, json!({"properties": {"roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{EXECUTOR}"), "principalId": principal}}))
        .await;
    r.assert_status(201);
    assert_eq!(r.json["type"], "Microsoft.Authorization/roleAssignments");
    assert_eq!(
        r.json["properties"]["scope"],
        format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.App/sessionPools/p")
    );
    assert_eq!(r.json["properties"]["principalId"], principal);
    // Same PUT again: 200; changing the role: refused.
    api.put(
        &at_pool,
        json!({"properties": {"roleDefinitionId": EXECUTOR, "principalId": principal}}),
    )
    .await
    .assert_status(200);
    api.put(
        &at_pool,
        json!({"properties": {"roleDefinitionId": READER, "principalId": principal}}),
    )
    .await
    .assert_error(409, "RoleAssignmentUpdateNotPermitted");
    let at_sub = format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/22222222-0000-4000-8000-000000000002");
    api.put(&at_sub, json!({"properties": {"roleDefinitionId": READER, "principalId": "bbbbbbbb-0000-4000-8000-000000000002"}})).await.assert_status(201);

    let mixed = at_pool.replace(
        "/providers/Microsoft.Authorization/roleAssignments",
        "/PROVIDERS/microsoft.authorization/ROLEASSIGNMENTS",
    );
    api.get(&mixed).await.assert_status(200);

    let list = |scope: String, filter: &'static str| {
        let api = &api;
        async move {
            let q = if filter.is_empty() {
                String::new()
            } else {
                format!("?$filter={}", urlencode(filter))
            };
            let r = api
                .get(&format!(
                    "{scope}/providers/Microsoft.Authorization/roleAssignments{q}"
                ))
                .await;
            r.assert_status(200);
            let mut names: Vec<String> = r.json["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["name"].as_str().map(str::to_owned))
                .collect();
            names.sort();
            names
        }
    };
    let rg_scope = format!("/subscriptions/{SUB}/resourceGroups/rg");
    assert_eq!(
        list(rg_scope.clone(), "").await.len(),
        2,
        "at, above and below"
    );
    assert_eq!(
        list(rg_scope.clone(), "atScope()").await,
        vec!["22222222-0000-4000-8000-000000000002"]
    );
    assert_eq!(list(pool.clone(), "atScope()").await.len(), 2);
    assert_eq!(
        list(
            rg_scope.clone(),
            "principalId eq 'aaaaaaaa-0000-4000-8000-000000000001'"
        )
        .await,
        vec!["11111111-0000-4000-8000-000000000001"]
    );
    let bad = api
        .get(&format!(
            "{rg_scope}/providers/Microsoft.Authorization/roleAssignments?$filter=name%20gt%201"
        ))
        .await;
    bad.assert_error(400, "InvalidFilter");

    api.put(
        &at_sub.replace("22222222", "33333333"),
        json!({"properties": {"roleDefinitionId": "nope", "principalId": principal}}),
    )
    .await
    .assert_error(400, "RoleDefinitionDoesNotExist");
    api.put(
        &at_sub.replace("22222222", "44444444"),
        json!({"properties": {"roleDefinitionId": READER, "principalId": "me"}}),
    )
    .await
    .assert_error(400, "InvalidPrincipalId");
    api.put(
        &format!("{SUB}/x").replace(
            SUB,
            &format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/not-a-uuid"
            ),
        ),
        json!({}),
    )
    .await
    .assert_error(404, "NotFound");
    api.put(
        &format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/not-a-uuid"
        ),
        json!({"properties": {}}),
    )
    .await
    .assert_error(400, "InvalidResourceName");
    api.put(&format!("{}/providers/Microsoft.Authorization/roleAssignments/55555555-0000-4000-8000-000000000005", pool_path("rg", "absent")), json!({"properties": {"roleDefinitionId": READER, "principalId": principal}}))
        .await
        .assert_error(404, "ResourceNotFound");

    api.delete(&at_pool).await.assert_status(200);
    api.delete(&at_pool).await.assert_status(204);
    api.get(&at_pool)
        .await
        .assert_error(404, "RoleAssignmentNotFound");
}

async fn role_definitions(store: TestStore) {
    let api = Api::start(store).await;
    let path = format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions");
    let r = api.get(&path).await;
    r.assert_status(200);
    let names: Vec<&str> = r.json["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["properties"]["roleName"].as_str())
        .collect();
    for n in [
        "Owner",
        "Contributor",
        "Reader",
        "Azure ContainerApps Session Executor",
        "Azure Kubernetes Service Cluster Admin Role",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let f = api
        .get(&format!(
            "{path}?$filter={}",
            urlencode("roleName eq 'Azure ContainerApps Session Executor'")
        ))
        .await;
    let v = f.json["value"].as_array().cloned().unwrap_or_default();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["name"], EXECUTOR);
    assert_eq!(
        v[0]["id"],
        format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{EXECUTOR}"
        )
    );
    api.get(&format!("{path}/{READER}"))
        .await
        .assert_status(200);
    api.get(&format!("{path}/00000000-0000-0000-0000-00000000dead"))
        .await
        .assert_error(404, "RoleDefinitionDoesNotExist");
    api.call(Method::PUT, &format!("{path}/{READER}"), Some(json!({})))
        .await
        .assert_error(405, "MethodNotAllowed");
}

async fn tutorial_deployment(store: TestStore) {
    let api = Api::start(store).await;
    api.group("tutorial").await;
    let template = include_str!("fixtures/tutorial-deploy.json");
    // Sent as the az CLI would, but with the template text (and its `#` comment) inline.
    let body = format!("{{\"properties\":{{\"mode\":\"Incremental\",\"template\":{template},\"parameters\":{{}}}}}}");
    let path = format!("/subscriptions/{SUB}/resourcegroups/tutorial/providers/Microsoft.Resources/deployments/deploy1");
    let r = api
        .raw(
            Method::PUT,
            &api.url(&path),
            Some(body.clone().into_bytes()),
            &[],
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.json["properties"]["provisioningState"], "Succeeded");
    let g = api.get(&path).await;
    g.assert_status(200);
    assert_eq!(g.json["properties"]["provisioningState"], "Succeeded");
    let pool = api.get(&pool_path("tutorial", "myshellpool")).await;
    pool.assert_status(200);
    assert_eq!(pool.json["location"], "northcentralus");
    assert_eq!(pool.json["properties"]["containerType"], "Shell");
    assert_eq!(
        pool.json["properties"]["scaleConfiguration"]["maxConcurrentSessions"],
        5
    );
    assert_eq!(
        pool.json["properties"]["sessionNetworkConfiguration"]["status"],
        "EgressEnabled"
    );
    // Redeploying is idempotent.
    api.raw(Method::PUT, &api.url(&path), Some(body.into_bytes()), &[])
        .await
        .assert_status(200);
}

async fn deployment_errors(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg").await;
    let path = format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Resources/deployments/d1"
    );
    let raw = |b: &'static str| {
        let url = api.url(&path);
        let api = &api;
        async move {
            api.raw(Method::PUT, &url, Some(b.as_bytes().to_vec()), &[])
                .await
        }
    };
    raw("{\"properties\": ").await.assert_status(400);
    raw("{\"properties\":{\"mode\":\"Complete\",\"template\":{\"resources\":[]}}}")
        .await
        .assert_error(400, "InvalidParameter");
    raw("{\"nope\":1}")
        .await
        .assert_error(400, "InvalidRequestContent");
    api.get(&path.replace("d1", "d2"))
        .await
        .assert_error(404, "ResourceNotFound");
    api.put(
        &path.replace("/rg/", "/missing/"),
        json!({"properties": {"template": {"resources": []}}}),
    )
    .await
    .assert_error(404, "ResourceGroupNotFound");
}

async fn defaults_and_restart(store: TestStore) {
    let mut api = Api::from(TestServer::start(store).await);
    let sub = sandpool_server::DEFAULT_SUBSCRIPTION;
    api.get(&format!("/subscriptions/{sub}/resourceGroups/default"))
        .await
        .assert_status(200);
    let pool = format!(
        "/subscriptions/{sub}/resourceGroups/default/providers/Microsoft.App/sessionPools/default"
    );
    let p = api.get(&pool).await;
    p.assert_status(200);
    assert_eq!(p.json["properties"]["containerType"], "Shell");

    api.group("persist").await;
    api.put(&pool_path("persist", "p"), json!({"location": "w"}))
        .await
        .assert_status(201);
    let d = api.delete(&pool).await;
    d.assert_status(202);
    let location = d.header("location").map(str::to_owned);

    api.srv.kill();
    api.srv.restart().await;
    api.get(&pool_path("persist", "p")).await.assert_status(200);
    // Deleted defaults are not re-created on restart.
    api.get(&pool).await.assert_error(404, "ResourceNotFound");
    if let Some(loc) = location {
        api.raw(Method::GET, &loc, None, &[])
            .await
            .assert_status(200);
    }
    api.srv.stop();
    api.srv.restart().await;
    api.get(&pool_path("persist", "p")).await.assert_status(200);
}

async fn operations_endpoints(store: TestStore) {
    let api = Api::start(store).await;
    let base = api.srv.base_url.clone();
    for p in ["/healthz", "/readyz"] {
        api.raw(Method::GET, &format!("{base}{p}"), None, &[])
            .await
            .assert_status(200);
    }
    api.group("m").await;
    let o = api
        .raw(Method::GET, &format!("{base}/openapi.json"), None, &[])
        .await;
    o.assert_status(200);
    assert!(o.json["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let paths = o.json["paths"].as_object().cloned().unwrap_or_default();
    for p in [
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}",
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.App/sessionPools/{name}",
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{name}",
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}",
        "/providers/Microsoft.Authorization/roleDefinitions",
    ] {
        assert!(paths.contains_key(p), "{p} missing from openapi");
    }
    let pool_ops = &paths["/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.App/sessionPools/{name}"];
    for m in ["put", "get", "patch", "delete"] {
        assert!(pool_ops.get(m).is_some(), "{m} missing");
    }
    let resp = api
        .http
        .get(format!("{base}/metrics"))
        .header("authorization", api.srv.admin_header())
        .send()
        .await
        .expect("metrics");
    let text = resp.text().await.expect("text");
    assert!(text.contains("sandpool_http_requests_total{method=\"PUT\",route=\"/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}\",status=\"201\"} 1"), "{text}");
    assert!(text.contains("sandpool_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/healthz\"}"), "{text}");
}
