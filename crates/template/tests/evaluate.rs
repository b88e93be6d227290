//! Template evaluation through the public interface: each feature and each error.

use sandpool_template::{evaluate, parse, Context, TemplateError, TemplateResource};
use serde_json::{json, Value};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn ctx() -> Context {
    Context {
        subscription_id: SUB.into(),
        resource_group: "rg1".into(),
        resource_group_location: "westeurope".into(),
        deployment_name: "dep1".into(),
    }
}

/// A template with one pool whose `properties` are `props`.
fn with_props(extra: Value, props: Value) -> Value {
    let mut t = json!({
        "resources": [{
            "type": "Microsoft.App/sessionPools",
            "apiVersion": "2025-02-02-preview",
            "name": "p",
            "location": "here",
            "properties": props,
        }]
    });
    if let (Value::Object(t), Value::Object(extra)) = (&mut t, extra) {
        t.extend(extra);
    }
    t
}

fn eval_props(extra: Value, props: Value, params: Value) -> Result<Value, TemplateError> {
    let r = evaluate(&with_props(extra, props), &params, &ctx())?;
    Ok(r[0].body["properties"].clone())
}

fn expr(e: &str) -> Result<Value, TemplateError> {
    eval_props(json!({}), json!({ "x": e }), json!({})).map(|p| p["x"].clone())
}

fn expr_with(extra: Value, params: Value, e: &str) -> Result<Value, TemplateError> {
    eval_props(extra, json!({ "x": e }), params).map(|p| p["x"].clone())
}

#[test]
fn tutorial_template_parses_and_evaluates_verbatim() {
    let text = include_str!("fixtures/tutorial.json");
    let template = parse(text).expect("tutorial template parses");
    assert_eq!(
        template["$schema"],
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
    );
    let resources = evaluate(&template, &Value::Null, &ctx()).unwrap();
    assert_eq!(resources.len(), 1);
    let r = &resources[0];
    assert_eq!(r.resource_type, "Microsoft.App/sessionpools");
    assert_eq!(r.name, "myshellpool");
    assert_eq!(r.api_version.as_deref(), Some("2025-02-02-preview"));
    assert_eq!(r.location.as_deref(), Some("North Central US"));
    assert_eq!(r.body["location"], "North Central US");
    assert_eq!(r.body["properties"]["containerType"], "Shell");
    assert_eq!(
        r.body["properties"]["scaleConfiguration"]["maxConcurrentSessions"],
        5
    );
    assert_eq!(
        r.body["properties"]["sessionNetworkConfiguration"]["status"],
        "EgressEnabled"
    );
    for k in ["type", "name", "apiVersion"] {
        assert!(r.body.get(k).is_none(), "{k} must not be in the body");
    }
}

#[test]
fn parameters_with_defaults_and_both_supplied_forms() {
    let extra = json!({"parameters": {
        "a": {"type": "string", "defaultValue": "dflt"},
        "b": {"type": "int"},
        "c": {"type": "bool", "defaultValue": false},
    }});
    let props =
        json!({"a": "[parameters('a')]", "b": "[parameters('b')]", "c": "[parameters('C')]"});
    let wrapped = eval_props(extra.clone(), props.clone(), json!({"b": {"value": 3}})).unwrap();
    assert_eq!(wrapped, json!({"a": "dflt", "b": 3, "c": false}));
    let bare = eval_props(
        extra.clone(),
        props.clone(),
        json!({"a": "mine", "b": 4, "c": true}),
    )
    .unwrap();
    assert_eq!(bare, json!({"a": "mine", "b": 4, "c": true}));
    let file =
        json!({"$schema": "x", "contentVersion": "1.0.0.0", "parameters": {"b": {"value": 5}}});
    assert_eq!(eval_props(extra, props, file).unwrap()["b"], 5);
}

#[test]
fn command_line_strings_are_coerced_to_declared_types() {
    let extra = json!({"parameters": {"n": {"type": "int"}, "f": {"type": "Bool"}}});
    let props = json!({"n": "[parameters('n')]", "f": "[parameters('f')]"});
    let p = eval_props(extra.clone(), props.clone(), json!({"n": "7", "f": "True"})).unwrap();
    assert_eq!(p, json!({"n": 7, "f": true}));
    let err = eval_props(extra, props, json!({"n": "seven", "f": "true"})).unwrap_err();
    assert_eq!(err.code, "InvalidDeploymentParameterValue");
    assert_eq!(err.target.as_deref(), Some("parameters.n"));
}

#[test]
fn missing_required_parameter_is_reported_even_if_unused() {
    let extra = json!({"parameters": {"needed": {"type": "string"}}});
    let err = eval_props(extra, json!({}), json!({})).unwrap_err();
    assert_eq!(err.code, "MissingDeploymentParameter");
    assert!(err.message.contains("needed"), "{}", err.message);
}

#[test]
fn allowed_values_and_wrong_types_are_rejected() {
    let extra =
        json!({"parameters": {"t": {"type": "string", "allowedValues": ["Shell", "PythonLTS"]}}});
    let props = json!({"t": "[parameters('t')]"});
    assert_eq!(
        eval_props(extra.clone(), props.clone(), json!({"t": "Shell"})).unwrap()["t"],
        "Shell"
    );
    let err = eval_props(extra.clone(), props.clone(), json!({"t": "Bash"})).unwrap_err();
    assert_eq!(err.code, "InvalidDeploymentParameterValue");
    assert!(
        err.message.contains("Bash") && err.message.contains("PythonLTS"),
        "{}",
        err.message
    );
    let err = eval_props(extra, props, json!({"t": 5})).unwrap_err();
    assert_eq!(err.code, "InvalidDeploymentParameterValue");
}

#[test]
fn undeclared_supplied_parameter_and_unknown_type_are_template_errors() {
    let err = eval_props(json!({}), json!({}), json!({"stray": 1})).unwrap_err();
    assert_eq!(err.code, "InvalidTemplate");
    assert!(err.message.contains("stray"));
    let extra = json!({"parameters": {"q": {"type": "float", "defaultValue": 1}}});
    let err = eval_props(extra, json!({}), json!({})).unwrap_err();
    assert!(err.message.contains("float"), "{}", err.message);
}

#[test]
fn parameter_default_can_be_an_expression() {
    let extra = json!({"parameters": {
        "loc": {"type": "string", "defaultValue": "[resourceGroup().location]"},
        "name": {"type": "string", "defaultValue": "[concat(parameters('prefix'), '-pool')]"},
        "prefix": {"type": "string", "defaultValue": "zz"},
    }});
    let props = json!({"l": "[parameters('loc')]", "n": "[parameters('name')]"});
    assert_eq!(
        eval_props(extra, props, json!({})).unwrap(),
        json!({"l": "westeurope", "n": "zz-pool"})
    );
}

#[test]
fn variables_reference_parameters_and_each_other() {
    let extra = json!({
        "parameters": {"p": {"type": "string", "defaultValue": "base"}},
        "variables": {
            "full": "[concat(variables('mid'), '-end')]",
            "mid": "[concat(parameters('p'), '-mid')]",
            "obj": {"nested": ["[variables('mid')]"]},
        }
    });
    let props = json!({"v": "[variables('full')]", "o": "[variables('obj').nested[0]]"});
    assert_eq!(
        eval_props(extra, props, json!({})).unwrap(),
        json!({"v": "base-mid-end", "o": "base-mid"})
    );
}

#[test]
fn variable_cycles_are_detected() {
    let extra =
        json!({"variables": {"a": "[variables('b')]", "b": "[concat('x', variables('a'))]"}});
    let err = expr_with(extra, json!({}), "[variables('a')]").unwrap_err();
    assert_eq!(err.code, "InvalidTemplate");
    assert!(err.message.contains("circular"), "{}", err.message);
    let extra = json!({"variables": {"self": "[variables('self')]"}});
    assert!(expr_with(extra, json!({}), "[variables('self')]")
        .unwrap_err()
        .message
        .contains("circular"));
}

#[test]
fn unknown_parameter_or_variable_reference_is_an_error() {
    assert!(expr("[parameters('nope')]")
        .unwrap_err()
        .message
        .contains("nope"));
    assert!(expr("[variables('nope')]")
        .unwrap_err()
        .message
        .contains("nope"));
}

#[test]
fn resource_group_subscription_and_deployment_functions() {
    assert_eq!(expr("[resourceGroup().location]").unwrap(), "westeurope");
    assert_eq!(expr("[resourceGroup().name]").unwrap(), "rg1");
    assert_eq!(
        expr("[resourceGroup().id]").unwrap(),
        format!("/subscriptions/{SUB}/resourceGroups/rg1")
    );
    assert_eq!(expr("[subscription().subscriptionId]").unwrap(), SUB);
    assert_eq!(expr("[deployment().name]").unwrap(), "dep1");
}

#[test]
fn concat_of_strings_and_of_arrays() {
    assert_eq!(expr("[concat('a', 'b', 1)]").unwrap(), "ab1");
    let extra = json!({"variables": {"l": [1, 2], "m": [3]}});
    assert_eq!(
        expr_with(
            extra.clone(),
            json!({}),
            "[concat(variables('l'), variables('m'))]"
        )
        .unwrap(),
        json!([1, 2, 3])
    );
    let err = expr_with(extra, json!({}), "[concat(variables('l'), 'x')]").unwrap_err();
    assert_eq!(err.code, "InvalidTemplateExpression");
}

#[test]
fn format_with_positional_items_and_escaped_braces() {
    assert_eq!(expr("[format('{0}-{1}-{0}', 'a', 2)]").unwrap(), "a-2-a");
    assert_eq!(expr("[format('{{{0}}}', 'x')]").unwrap(), "{x}");
    assert_eq!(expr("[format('{0}', true())]").unwrap(), "True");
    assert_eq!(
        expr("[format('{1}', 'a')]").unwrap_err().code,
        "InvalidTemplateExpression"
    );
    assert_eq!(
        expr("[format('{0:D2}', 1)]").unwrap_err().code,
        "InvalidTemplateExpression"
    );
}

#[test]
fn resource_id_builds_full_ids() {
    let base = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers");
    assert_eq!(
        expr("[resourceId('Microsoft.App/sessionPools', 'p1')]").unwrap(),
        format!("{base}/Microsoft.App/sessionPools/p1")
    );
    assert_eq!(
        expr("[resourceId('other', 'Microsoft.ManagedIdentity/userAssignedIdentities', 'u')]").unwrap(),
        format!("/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u")
    );
    assert_eq!(
        expr("[resourceId('s2', 'rg2', 'A.B/c/d', 'n1', 'n2')]").unwrap(),
        "/subscriptions/s2/resourceGroups/rg2/providers/A.B/c/n1/d/n2"
    );
    assert_eq!(
        expr("[resourceId('A.B/c/d', 'n1')]").unwrap_err().code,
        "InvalidTemplateExpression"
    );
    assert_eq!(
        expr("[resourceId('x', 'y')]").unwrap_err().code,
        "InvalidTemplateExpression"
    );
}

#[test]
fn literals_booleans_and_accessors() {
    assert_eq!(expr("['it''s']").unwrap(), "it's");
    assert_eq!(expr("[42]").unwrap(), 42);
    assert_eq!(expr("[true()]").unwrap(), true);
    assert_eq!(expr("[false()]").unwrap(), false);
    let extra = json!({"variables": {"o": {"list": [{"k": "v0"}, {"k": "v1"}]}}});
    assert_eq!(
        expr_with(extra.clone(), json!({}), "[variables('o').list[1].k]").unwrap(),
        "v1"
    );
    assert_eq!(
        expr_with(extra.clone(), json!({}), "[variables('o')['list'][0]['k']]").unwrap(),
        "v0"
    );
    assert!(expr_with(extra.clone(), json!({}), "[variables('o').list[5]]").is_err());
    assert!(expr_with(extra, json!({}), "[variables('o').missing]")
        .unwrap_err()
        .message
        .contains("missing"));
}

#[test]
fn escaped_bracket_and_plain_strings_stay_literal() {
    assert_eq!(expr("[[not an expression]").unwrap(), "[not an expression]");
    assert_eq!(expr("plain [text]").unwrap(), "plain [text]");
    assert_eq!(expr("[").unwrap(), "[");
}

#[test]
fn unsupported_function_is_named_and_located() {
    let err = expr("[concat('a', uniqueString(resourceGroup().id))]").unwrap_err();
    assert_eq!(err.code, "InvalidTemplateExpression");
    assert!(err.message.contains("uniqueString"), "{}", err.message);
    assert_eq!(err.target.as_deref(), Some("resources[0].properties.x"));
}

#[test]
fn expression_syntax_errors_are_expression_errors() {
    for bad in [
        "[concat('a']",
        "[parameters('a') extra]",
        "[]",
        "[ 'unterminated ]",
    ] {
        assert_eq!(
            expr(bad).unwrap_err().code,
            "InvalidTemplateExpression",
            "{bad}"
        );
    }
}

#[test]
fn expressions_work_in_name_type_and_location() {
    let t = json!({
        "parameters": {"n": {"type": "string"}},
        "variables": {"t": "Microsoft.App/sessionPools"},
        "resources": [
            {"type": "[variables('t')]", "name": "[parameters('n')]", "location": "[resourceGroup().location]",
             "dependsOn": ["[resourceId('Microsoft.X/y', 'z')]"], "properties": {}},
            {"type": "Microsoft.ManagedIdentity/userAssignedIdentities", "name": "[format('{0}-uami', parameters('n'))]",
             "location": "[resourceGroup().location]"},
        ]
    });
    let r = evaluate(&t, &json!({"n": {"value": "pool"}}), &ctx()).unwrap();
    assert_eq!(
        r[0],
        TemplateResource {
            resource_type: "Microsoft.App/sessionPools".into(),
            name: "pool".into(),
            api_version: None,
            location: Some("westeurope".into()),
            body: json!({"location": "westeurope", "properties": {}}),
        }
    );
    assert_eq!(r[1].name, "pool-uami");
    assert_eq!(
        r[1].resource_type,
        "Microsoft.ManagedIdentity/userAssignedIdentities"
    );
}

#[test]
fn condition_false_skips_a_resource() {
    let t = json!({"resources": [
        {"type": "A.B/c", "name": "skipped", "condition": "[false()]"},
        {"type": "A.B/c", "name": "kept", "condition": true},
    ]});
    let r = evaluate(&t, &Value::Null, &ctx()).unwrap();
    assert_eq!(
        r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
}

#[test]
fn copy_loops_nested_resources_and_bad_shapes_are_rejected_clearly() {
    let cases = [
        (
            json!({"resources": [{"type": "A.B/c", "name": "n", "copy": {"name": "l", "count": 2}}]}),
            "copy",
        ),
        (json!({"variables": {"copy": []}, "resources": []}), "copy"),
        (
            json!({"resources": [{"type": "A.B/c", "name": "n", "resources": [{"type": "d", "name": "e"}]}]}),
            "nested",
        ),
        (json!({"resources": [{"name": "n"}]}), "type"),
        (json!({"resources": [{"type": "A.B/c", "name": 5}]}), "name"),
        (json!({"resources": {}}), "array"),
        (json!({}), "resources"),
        (json!([]), "object"),
    ];
    for (t, word) in cases {
        let err = evaluate(&t, &Value::Null, &ctx()).unwrap_err();
        assert_eq!(err.code, "InvalidTemplate", "{t}");
        assert!(err.message.contains(word), "{t}: {}", err.message);
    }
}

#[test]
fn resources_keep_template_order() {
    let t = json!({"resources": [
        {"type": "A.B/c", "name": "z"}, {"type": "A.B/c", "name": "a"}, {"type": "A.B/c", "name": "m"},
    ]});
    let names: Vec<String> = evaluate(&t, &Value::Null, &ctx())
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["z", "a", "m"]);
}

#[test]
fn parsed_text_with_comments_feeds_evaluation() {
    let text = r#"{
      // a pool named by parameter
      "parameters": { "n": { "type": "string", "defaultValue": "p#1" } }, /* trailing , ok */
      "resources": [ { "type": "A.B/c", "name": "[parameters('n')]", }, ],
    }"#;
    let r = evaluate(&parse(text).unwrap(), &Value::Null, &ctx()).unwrap();
    assert_eq!(r[0].name, "p#1");
}

/// Secure parameters reach the resources that use them, but the deployment's record of its
/// parameters and outputs carries their type only (as ARM answers a deployment); a refused
/// allowed value is not echoed either.
#[test]
fn secure_parameters_and_outputs_keep_their_values_out_of_the_record() {
    let template = json!({
        "parameters": {
            "password": {"type": "secureString"},
            "settings": {"type": "secureObject", "defaultValue": {"token": "object-secret"}},
            "size": {"type": "int", "defaultValue": 2},
        },
        "resources": [{
            "type": "Microsoft.App/sessionPools", "apiVersion": "2025-02-02-preview", "name": "p",
            "location": "here",
            "properties": {"secrets": [{"name": "pw", "value": "[parameters('password')]"}]},
        }],
        "outputs": {
            "echoed": {"type": "securestring", "value": "[parameters('password')]"},
            "whole": {"type": "secureObject", "value": "[parameters('settings')]"},
            "size": {"type": "int", "value": "[parameters('size')]"},
            "skipped": {"type": "string", "value": "x", "condition": false},
        },
    });
    let d = sandpool_template::evaluate_deployment(
        &template,
        &json!({"password": {"value": "s3cret-value"}}),
        &ctx(),
    )
    .unwrap();
    assert_eq!(
        d.resources[0].body["properties"]["secrets"][0]["value"],
        "s3cret-value"
    );
    assert_eq!(
        d.parameters,
        json!({
            "password": {"type": "SecureString"},
            "settings": {"type": "SecureObject"},
            "size": {"type": "Int", "value": 2},
        })
    );
    assert_eq!(
        d.outputs,
        json!({
            "echoed": {"type": "SecureString"},
            "whole": {"type": "SecureObject"},
            "size": {"type": "Int", "value": 2},
        })
    );
    let text = format!("{:?} {:?}", d.parameters, d.outputs);
    assert!(
        !text.contains("s3cret") && !text.contains("object-secret"),
        "{text}"
    );

    let guarded = json!({
        "parameters": {"password": {"type": "secureString", "allowedValues": ["a"]}},
        "resources": [],
    });
    let e = evaluate(&guarded, &json!({"password": "not-allowed-secret"}), &ctx()).unwrap_err();
    assert!(!e.message.contains("not-allowed-secret"), "{}", e.message);
}
