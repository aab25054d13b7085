//! `/schemas`: Parse Server's schema API, its shapes, codes and messages.

use oxbase_kit::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, read};

async fn master(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    server.master_json(method, path, body).await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    master(server, Method::GET, path, None).await
}

async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    master(server, Method::POST, path, Some(body)).await
}

async fn put(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    master(server, Method::PUT, path, Some(body)).await
}

async fn delete(server: &TestServer, path: &str) -> (u16, Value) {
    master(server, Method::DELETE, path, None).await
}

/// Asserts a Parse error with status 400, this code and this message.
#[track_caller]
fn assert_parse_error(result: &(u16, Value), code: i64, message: &str) {
    assert_error(result, 400, code);
    assert_eq!(result.1["error"], message, "message of {}", result.1);
}

fn default_clp() -> Value {
    json!({
        "find": {"*": true},
        "count": {"*": true},
        "get": {"*": true},
        "create": {"*": true},
        "update": {"*": true},
        "delete": {"*": true},
        "addField": {"*": true},
        "protectedFields": {"*": []},
    })
}

fn default_fields() -> Value {
    json!({
        "objectId": {"type": "String"},
        "createdAt": {"type": "Date"},
        "updatedAt": {"type": "Date"},
        "ACL": {"type": "ACL"},
    })
}

/// The default fields plus `extra`.
fn fields_with(extra: Value) -> Value {
    let mut fields = default_fields();
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_master_key() {
    let server = TestServer::start().await;
    let denied = json!({"error": "Permission denied"});
    for (method, path) in [
        (Method::GET, "schemas"),
        (Method::GET, "schemas/A"),
        (Method::POST, "schemas"),
        (Method::POST, "schemas/A"),
        (Method::PUT, "schemas/A"),
        (Method::DELETE, "schemas/A"),
    ] {
        let body = (method != Method::GET).then(|| json!({"className": "A"}));
        let result = server.json(method.clone(), path, body).await;
        assert_eq!(result, (403, denied.clone()), "{method} {path}");
    }
    assert_error(&get(&server, "schemas/A").await, 400, 103);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_master_key_may_only_read() {
    let server = TestServer::start_with(|c| {
        c.read_only_master_key = Some(Secret::new("reader"));
    })
    .await;
    assert_eq!(post(&server, "schemas/Game", json!({})).await.0, 200);
    let reader = |method: Method, path: &str| {
        server
            .request(method, path)
            .header("X-Parse-Master-Key", "reader")
    };
    let (status, body) = read(reader(Method::GET, "schemas/Game").send().await.unwrap()).await;
    assert_eq!((status, &body["className"]), (200, &json!("Game")));
    let (status, body) = read(reader(Method::GET, "schemas").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    for (method, path, action) in [
        (Method::POST, "schemas/Other", "create"),
        (Method::PUT, "schemas/Game", "update"),
        (Method::DELETE, "schemas/Game", "delete"),
    ] {
        let result = read(reader(method, path).json(&json!({})).send().await.unwrap()).await;
        assert_error(&result, 400, 119);
        assert_eq!(
            result.1["error"],
            format!("read-only masterKey isn't allowed to {action} a schema.")
        );
    }
    assert_eq!(get(&server, "schemas/Game").await.0, 200);
    assert_error(&get(&server, "schemas/Other").await, 400, 103);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_class_answers_its_whole_schema() {
    let server = TestServer::start().await;
    let (status, created) = post(
        &server,
        "schemas",
        json!({
            "className": "NewClass",
            "fields": {
                "foo": {"type": "Number"},
                "ptr": {"type": "Pointer", "targetClass": "SomeClass"},
                "rel": {"type": "Relation", "targetClass": "_User"},
                "title": {"type": "String", "required": true, "defaultValue": "untitled"},
                "count": {"type": "Number", "defaultValue": 0},
                "when": {"type": "Date", "defaultValue": {"__type": "Date", "iso": "2024-01-02"}},
                "flag": {"type": "Boolean", "required": false},
            },
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let expected = json!({
        "className": "NewClass",
        "fields": fields_with(json!({
            "foo": {"type": "Number"},
            "ptr": {"type": "Pointer", "targetClass": "SomeClass"},
            "rel": {"type": "Relation", "targetClass": "_User"},
            "title": {"type": "String", "required": true, "defaultValue": "untitled"},
            "count": {"type": "Number", "defaultValue": 0},
            "when": {"type": "Date", "defaultValue": {"__type": "Date", "iso": "2024-01-02T00:00:00.000Z"}},
            "flag": {"type": "Boolean", "required": false},
        })),
        "classLevelPermissions": default_clp(),
    });
    assert_eq!(created, expected);
    assert_eq!(
        get(&server, "schemas/NewClass").await,
        (200, expected.clone())
    );

    // The class name may be in the path, in the body, or in both.
    let (status, body) = post(&server, "schemas/Second", json!({"className": "Second"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"className": "Second", "fields": default_fields(), "classLevelPermissions": default_clp()})
    );
    let (status, body) = post(&server, "schemas/Third", json!({})).await;
    assert_eq!((status, &body["className"]), (200, &json!("Third")));

    // The listing holds them, and _User and _Role, which always exist.
    let (status, all) = get(&server, "schemas").await;
    assert_eq!(status, 200, "{all}");
    let results = all["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|s| s["className"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["NewClass", "Second", "Third", "_Role", "_User"]);
    assert_eq!(results[0], expected);
    assert_eq!(
        results[4]["fields"]["username"],
        json!({"type": "String"}),
        "{}",
        results[4]
    );
    assert_eq!(
        results[3]["fields"]["users"],
        json!({"type": "Relation", "targetClass": "_User"})
    );

    // Objects of the new class follow the declared types.
    let bad = server
        .post("classes/NewClass", json!({"foo": "text"}))
        .await;
    assert_error(&bad, 400, 111);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_refuses_what_parse_refuses() {
    let server = TestServer::start().await;
    assert_parse_error(
        &post(&server, "schemas/A", json!({"className": "B"})).await,
        103,
        "Class name mismatch between B and A.",
    );
    assert_parse_error(
        &post(&server, "schemas", json!({})).await,
        135,
        "POST /schemas needs a class name.",
    );
    assert_eq!(
        post(&server, "schemas", json!({"className": "A"})).await.0,
        200
    );
    assert_parse_error(
        &post(&server, "schemas", json!({"className": "A"})).await,
        103,
        "Class A already exists.",
    );
    // Parse's volatile classes always exist.
    for volatile in ["_PushStatus", "_GlobalConfig"] {
        assert_parse_error(
            &post(&server, &format!("schemas/{volatile}"), json!({})).await,
            103,
            &format!("Class {volatile} already exists."),
        );
    }
    for bad in ["1abc", "_Secret", "length", "_Join:a:B"] {
        assert_parse_error(
            &post(&server, &format!("schemas/{bad}"), json!({})).await,
            103,
            &format!(
                "Invalid classname: {bad}, classnames can only have alphanumeric characters and _, and must start with an alpha character "
            ),
        );
    }

    let with_field = |field: Value| json!({"className": "B", "fields": field});
    let cases = [
        (
            json!({"1bad": {"type": "String"}}),
            105,
            "invalid field name: 1bad",
        ),
        (
            json!({"className": {"type": "String"}}),
            105,
            "invalid field name: className",
        ),
        (
            json!({"objectId": {"type": "String"}}),
            136,
            "field objectId cannot be added",
        ),
        (
            json!({"f": {"type": "Money"}}),
            111,
            "invalid field type: Money",
        ),
        (
            json!({"f": {"type": "ACL"}}),
            111,
            "invalid field type: ACL",
        ),
        (json!({"f": {"type": 5}}), 107, "invalid JSON"),
        (json!({"f": "String"}), 107, "invalid JSON"),
        (
            json!({"f": {"type": "Pointer"}}),
            135,
            "type Pointer needs a class name",
        ),
        (
            json!({"f": {"type": "Relation", "targetClass": ""}}),
            135,
            "type Relation needs a class name",
        ),
        (
            json!({"f": {"type": "Pointer", "targetClass": 7}}),
            107,
            "invalid JSON",
        ),
        (
            json!({"f": {"type": "Pointer", "targetClass": "no-such"}}),
            103,
            "Invalid classname: no-such, classnames can only have alphanumeric characters and _, and must start with an alpha character ",
        ),
        (
            json!({"f": {"type": "String", "defaultValue": 10}}),
            111,
            "schema mismatch for B.f default value; expected String but got Number",
        ),
        (
            json!({"f": {"type": "Pointer", "targetClass": "X", "defaultValue": {"__type": "Pointer", "className": "Y", "objectId": "y"}}}),
            111,
            "schema mismatch for B.f default value; expected Pointer<X> but got Pointer<Y>",
        ),
        (
            json!({"f": {"type": "Relation", "targetClass": "X", "required": true}}),
            111,
            "The 'required' option is not applicable for Relation<X>",
        ),
        (
            json!({"f": {"type": "Relation", "targetClass": "X", "defaultValue": {"__type": "Relation", "className": "X"}}}),
            111,
            "The 'default value' option is not applicable for Relation<X>",
        ),
        (
            json!({"g1": {"type": "GeoPoint"}, "g2": {"type": "GeoPoint"}}),
            111,
            "currently, only one GeoPoint field may exist in an object. Adding g2 when g1 already exists.",
        ),
    ];
    for (fields, code, message) in cases {
        let result = post(&server, "schemas", with_field(fields.clone())).await;
        assert_parse_error(&result, code, message);
    }
    assert_error(
        &post(&server, "schemas", json!({"className": "B", "fields": "x"})).await,
        400,
        107,
    );
    // _User's own fields are Parse's.
    assert_parse_error(
        &post(
            &server,
            "schemas/_Installation",
            json!({"fields": {"deviceToken": {"type": "String"}}}),
        )
        .await,
        136,
        "field deviceToken cannot be added",
    );
    // Nothing was created by the refused requests.
    assert_error(&get(&server, "schemas/B").await, 400, 103);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_level_permissions_are_validated_like_parse() {
    let server = TestServer::start().await;
    let clp = |clp: Value| {
        json!({
            "className": "Perms",
            "fields": {
                "owner": {"type": "Pointer", "targetClass": "_User"},
                "team": {"type": "Pointer", "targetClass": "Team"},
                "secret": {"type": "String"},
            },
            "classLevelPermissions": clp,
        })
    };
    let cases = [
        (
            json!({"dummy": {"*": true}}),
            "dummy is not a valid operation for class level permissions",
        ),
        (
            json!({"get": true}),
            "'true' is not a valid value for class level permissions get - must be an object",
        ),
        (
            json!({"find": {" *": true}}),
            "' *' is not a valid key for class level permissions",
        ),
        (
            json!({"find": {"12345_6789": true}}),
            "'12345_6789' is not a valid key for class level permissions",
        ),
        (
            json!({"find": {"*": 1}}),
            "'1' is not a valid value for class level permissions find:*:1",
        ),
        (
            json!({"find": {"*": ""}}),
            "'' is not a valid value for class level permissions find:*:",
        ),
        (
            json!({"readUserFields": true}),
            "'true' is not a valid value for class level permissions readUserFields - must be an array",
        ),
        (
            json!({"writeUserFields": ["team"]}),
            "'team' is not a valid column for class level pointer permissions writeUserFields",
        ),
        (
            json!({"get": {"pointerFields": {}}}),
            "'[object Object]' is not a valid value for get[pointerFields] - expected an array.",
        ),
        (
            json!({"get": {"pointerFields": ["secret"]}}),
            "'secret' is not a valid column for class level pointer permissions [object Object]",
        ),
        (
            json!({"protectedFields": {"*": "secret"}}),
            "'secret' is not a valid value for protectedFields[*] - expected an array.",
        ),
        (
            json!({"protectedFields": {"*": ["createdAt"]}}),
            "Default field 'createdAt' can not be protected",
        ),
        (
            json!({"protectedFields": {"*": ["nope"]}}),
            "Field 'nope' in protectedFields:* does not exist",
        ),
        (
            json!({"protectedFields": {"user-1": []}}),
            "'user-1' is not a valid key for class level permissions",
        ),
    ];
    for (perms, message) in cases {
        let result = post(&server, "schemas", clp(perms.clone())).await;
        assert_parse_error(&result, 107, message);
    }
    assert_error(&get(&server, "schemas/Perms").await, 400, 103);

    let good = json!({
        "find": {"*": true, "requiresAuthentication": true},
        "create": {"role:admin": true, "abc123XYZ": true},
        "get": {"pointerFields": ["owner"]},
        "readUserFields": ["owner"],
        "protectedFields": {"*": ["secret"], "authenticated": [], "userField:owner": []},
    });
    let (status, body) = post(&server, "schemas", clp(good)).await;
    assert_eq!(status, 200, "{body}");
    // Operations not named are closed, as Parse reads them back.
    let expected = json!({
        "find": {"*": true, "requiresAuthentication": true},
        "get": {"pointerFields": ["owner"]},
        "count": {},
        "create": {"role:admin": true, "abc123XYZ": true},
        "update": {},
        "delete": {},
        "addField": {},
        "protectedFields": {"*": ["secret"], "authenticated": [], "userField:owner": []},
        "readUserFields": ["owner"],
    });
    assert_eq!(body["classLevelPermissions"], expected);
    assert_eq!(
        get(&server, "schemas/Perms").await.1["classLevelPermissions"],
        expected
    );

    // Without the master key, the closed operations are refused at once:
    // the cache follows the new permissions.
    let created = server.post("classes/Perms", json!({})).await;
    assert_error(&created, 400, 119);
    let counted = server
        .query("Perms", &[("count", "1".into()), ("limit", "0".into())])
        .await;
    assert_error(&counted, 400, 119);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_adds_and_deletes_fields() {
    let server = TestServer::start().await;
    let (status, _) = server
        .post("classes/Game", json!({"score": 1, "name": "a", "spot": {"__type": "GeoPoint", "latitude": 1, "longitude": 2}}))
        .await;
    assert_eq!(status, 201);

    let (status, body) = put(
        &server,
        "schemas/Game",
        json!({"className": "Game", "fields": {
            "name": {"__op": "Delete"},
            "level": {"type": "Number", "required": true, "defaultValue": 1},
            "owner": {"type": "Pointer", "targetClass": "_User"},
            "tags": {"type": "Relation", "targetClass": "Tag"},
            "score": {"type": "Number"},
        }}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let expected = json!({
        "className": "Game",
        "fields": fields_with(json!({
            "score": {"type": "Number"},
            "spot": {"type": "GeoPoint"},
            "level": {"type": "Number", "required": true, "defaultValue": 1},
            "owner": {"type": "Pointer", "targetClass": "_User"},
            "tags": {"type": "Relation", "targetClass": "Tag"},
        })),
        "classLevelPermissions": default_clp(),
    });
    assert_eq!(body, expected);
    assert_eq!(get(&server, "schemas/Game").await, (200, expected.clone()));
    // The deleted field's values are gone from the objects.
    let objects = server.all("Game").await;
    assert_eq!(objects.len(), 1);
    assert!(objects[0].get("name").is_none(), "{}", objects[0]);
    assert_eq!(objects[0]["score"], 1);

    // A request without changes answers the schema.
    assert_eq!(
        put(&server, "schemas/Game", json!({})).await,
        (200, expected)
    );

    let field = |fields: Value| json!({"fields": fields});
    let cases = [
        (
            field(json!({"score": {"type": "String"}})),
            255,
            "Field score exists, cannot update.",
        ),
        (
            field(json!({"score": "Number"})),
            255,
            "Field score exists, cannot update.",
        ),
        (
            field(json!({"nope": {"__op": "Delete"}})),
            255,
            "Field nope does not exist, cannot delete.",
        ),
        (
            field(json!({"objectId": {"__op": "Delete"}})),
            136,
            "field objectId cannot be changed",
        ),
        (
            field(json!({"createdAt": {"type": "String"}})),
            255,
            "Field createdAt exists, cannot update.",
        ),
        (
            field(json!({"2x": {"type": "String"}})),
            105,
            "invalid field name: 2x",
        ),
        (
            field(json!({"ACL2": {"type": "Bogus"}})),
            111,
            "invalid field type: Bogus",
        ),
        (
            field(json!({"where": {"type": "GeoPoint"}})),
            111,
            "currently, only one GeoPoint field may exist in an object. Adding where when spot already exists.",
        ),
        (
            field(json!({"owner": {"type": "Pointer", "targetClass": "Team"}})),
            111,
            "schema mismatch for Game.owner; expected Pointer<_User> but got Pointer<Team>",
        ),
        (
            field(json!({"x": {"type": "String", "defaultValue": false}})),
            111,
            "schema mismatch for Game.x default value; expected String but got Boolean",
        ),
        (
            json!({"className": "Other"}),
            103,
            "Class name mismatch between Other and Game.",
        ),
        // Parse Server would change the options; the store cannot yet.
        (
            field(json!({"level": {"type": "Number"}})),
            108,
            "changing the required or defaultValue options of the existing field level is not supported yet",
        ),
        (
            json!({"classLevelPermissions": {"find": {"*": false}}}),
            107,
            "'false' is not a valid value for class level permissions find:*:false",
        ),
    ];
    for (body, code, message) in cases {
        let result = put(&server, "schemas/Game", body.clone()).await;
        assert_parse_error(&result, code, message);
    }
    // A refused request changes nothing, even the deletions it asked for.
    let refused = put(
        &server,
        "schemas/Game",
        field(json!({"score": {"__op": "Delete"}, "bad": {"type": "Fake"}})),
    )
    .await;
    assert_parse_error(&refused, 111, "invalid field type: Fake");
    assert_eq!(server.all("Game").await[0]["score"], 1);

    // Deleting the GeoPoint makes room for another in the same request.
    let (status, body) = put(
        &server,
        "schemas/Game",
        field(json!({"spot": {"__op": "Delete"}, "where": {"type": "GeoPoint"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fields"]["where"], json!({"type": "GeoPoint"}));
    assert!(body["fields"].get("spot").is_none());

    assert_parse_error(
        &put(
            &server,
            "schemas/NoClass",
            field(json!({"f": {"type": "String"}})),
        )
        .await,
        103,
        "Class NoClass does not exist.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_permissions_takes_effect_at_once() {
    let server = TestServer::start().await;
    assert_eq!(
        server.post("classes/Note", json!({"text": "a"})).await.0,
        201
    );
    let (status, body) = put(
        &server,
        "schemas/Note",
        json!({"classLevelPermissions": {"find": {"*": true}, "create": {"role:admin": true}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["classLevelPermissions"]["create"],
        json!({"role:admin": true})
    );
    assert_eq!(body["classLevelPermissions"]["get"], json!({}));
    assert_error(
        &server.post("classes/Note", json!({"text": "b"})).await,
        400,
        119,
    );
    let (status, found) = server.query("Note", &[]).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"].as_array().unwrap().len(), 1);

    let (status, _) = put(
        &server,
        "schemas/Note",
        json!({"classLevelPermissions": {"create": {"*": true}, "addField": {}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        server.post("classes/Note", json!({"text": "b"})).await.0,
        201
    );
    assert_error(
        &server.post("classes/Note", json!({"other": 1})).await,
        400,
        119,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_are_added_and_deleted() {
    let server = TestServer::start().await;
    let (status, body) = post(
        &server,
        "schemas",
        json!({
            "className": "Indexed",
            "fields": {"a": {"type": "String"}, "b": {"type": "Number"}},
            "indexes": {"by_a": {"a": 1}},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["indexes"], json!({"by_a": {"a": 1}}));
    // An empty set of indexes shows none.
    let (status, body) = post(
        &server,
        "schemas",
        json!({"className": "Plain", "indexes": {}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.get("indexes").is_none(), "{body}");

    let (status, body) = put(
        &server,
        "schemas/Indexed",
        json!({
            "fields": {"c": {"type": "String"}},
            "indexes": {"by_b_c": {"b": -1, "c": 1}, "by_created": {"createdAt": 1}},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["indexes"],
        json!({"by_a": {"a": 1}, "by_b_c": {"b": -1, "c": 1}, "by_created": {"createdAt": 1}})
    );
    let (status, body) = put(
        &server,
        "schemas/Indexed",
        json!({"indexes": {"by_a": {"__op": "Delete"}, "by_b_c": {"__op": "Delete"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["indexes"], json!({"by_created": {"createdAt": 1}}));
    assert_eq!(
        get(&server, "schemas/Indexed").await.1["indexes"],
        body["indexes"]
    );

    // Objects still save and query with the indexes in place.
    assert_eq!(
        server
            .post("classes/Indexed", json!({"a": "x", "b": 2}))
            .await
            .0,
        201
    );
    let (status, found) = server
        .query("Indexed", &[("where", json!({"a": "x"}).to_string())])
        .await;
    assert_eq!(
        (status, found["results"].as_array().map(Vec::len)),
        (200, Some(1))
    );

    let cases = [
        (
            json!({"indexes": {"by_d": {"d": 1}}}),
            "Field d does not exist, cannot add index.",
        ),
        (
            json!({"fields": {"d": {"type": "String"}}, "indexes": {"by_d": {"d": 1, "e": 1}}}),
            "Field e does not exist, cannot add index.",
        ),
        (
            json!({"indexes": {"gone": {"__op": "Delete"}}}),
            "Index gone does not exist, cannot delete.",
        ),
        (
            json!({"indexes": {"by_created": {"a": 1}}}),
            "Index by_created exists, cannot update.",
        ),
        (
            json!({"fields": {"gone": {"__op": "Delete"}}, "indexes": {"by_c": {"c": 1}}}),
            "Field gone does not exist, cannot delete.",
        ),
        (
            json!({"indexes": {"by_acl": {"ACL": 1}}}),
            "Field ACL does not exist, cannot add index.",
        ),
        (
            json!({"indexes": {"by_a_up": {"a": "up"}}}),
            "Index by_a_up has an invalid type for a: up",
        ),
    ];
    for (body, message) in cases {
        let result = put(&server, "schemas/Indexed", body.clone()).await;
        let code = if message.starts_with("Field gone") {
            255
        } else {
            102
        };
        assert_parse_error(&result, code, message);
    }
    // A refused index leaves the fields of the same request unadded.
    assert!(
        get(&server, "schemas/Indexed").await.1["fields"]
            .get("d")
            .is_none()
    );
    assert_parse_error(
        &post(
            &server,
            "schemas",
            json!({"className": "Bad", "indexes": {"x": {"missing": 1}}}),
        )
        .await,
        102,
        "Field missing does not exist, cannot add index.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_class() {
    let server = TestServer::start().await;
    let (status, created) = server.post("classes/Full", json!({"n": 1})).await;
    assert_eq!(status, 201);
    assert_eq!(server.post("classes/Full", json!({"n": 2})).await.0, 201);
    assert_parse_error(
        &delete(&server, "schemas/Full").await,
        255,
        "Class Full is not empty, contains 2 objects, cannot drop schema.",
    );
    assert_eq!(get(&server, "schemas/Full").await.0, 200);

    let id = created["objectId"].as_str().unwrap();
    assert_eq!(server.delete(&format!("classes/Full/{id}")).await.0, 200);
    assert_parse_error(
        &delete(&server, "schemas/Full").await,
        255,
        "Class Full is not empty, contains 1 objects, cannot drop schema.",
    );

    assert_eq!(post(&server, "schemas/Empty", json!({})).await.0, 200);
    assert_eq!(delete(&server, "schemas/Empty").await, (200, json!({})));
    assert_parse_error(
        &get(&server, "schemas/Empty").await,
        103,
        "Class Empty does not exist.",
    );
    let (_, all) = get(&server, "schemas").await;
    assert!(
        all["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["className"] != "Empty"),
        "{all}"
    );
    // The class can be made again, from scratch.
    assert_eq!(
        server.post("classes/Empty", json!({"n": "text"})).await.0,
        201
    );
    assert_eq!(
        get(&server, "schemas/Empty").await.1["fields"]["n"],
        json!({"type": "String"})
    );

    // A class that does not exist deletes without complaint; a name that
    // cannot be a class is refused.
    assert_eq!(delete(&server, "schemas/Missing").await, (200, json!({})));
    assert_parse_error(
        &delete(&server, "schemas/_GlobalConfig").await,
        103,
        "Invalid classname: _GlobalConfig, classnames can only have alphanumeric characters and _, and must start with an alpha character ",
    );
}

async fn members(server: &TestServer, related: &Value) -> usize {
    let (status, body) = server
        .query("Item", &[("where", related.to_string())])
        .await;
    assert_eq!(status, 200, "{body}");
    body["results"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_class_drops_its_relations() {
    let server = TestServer::start_with(|c| c.allow_custom_object_id = true).await;
    let (status, _) = server.post("classes/Item", json!({"objectId": "i1"})).await;
    assert_eq!(status, 201);
    let add = json!({"objectId": "o1", "members": {"__op": "AddRelation", "objects": [
        {"__type": "Pointer", "className": "Item", "objectId": "i1"}
    ]}});
    assert_eq!(server.post("classes/Owner", add).await.0, 201);
    let related = json!({"$relatedTo": {"object": {"__type": "Pointer", "className": "Owner", "objectId": "o1"}, "key": "members"}});
    assert_eq!(members(&server, &related).await, 1);
    assert_eq!(server.delete("classes/Owner/o1").await.0, 200);
    assert_eq!(delete(&server, "schemas/Owner").await, (200, json!({})));

    // The same class and object again: the old relation is gone.
    let (status, body) = post(
        &server,
        "schemas/Owner",
        json!({"fields": {"members": {"type": "Relation", "targetClass": "Item"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .post("classes/Owner", json!({"objectId": "o1"}))
            .await
            .0,
        201
    );
    assert_eq!(members(&server, &related).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_classes_have_their_own_fields() {
    let server = TestServer::start().await;
    // _User and _Role exist before anything is stored in them.
    let (status, user) = get(&server, "schemas/_User").await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(
        user["fields"],
        fields_with(json!({
            "username": {"type": "String"},
            "password": {"type": "String"},
            "email": {"type": "String"},
            "emailVerified": {"type": "Boolean"},
            "authData": {"type": "Object"},
        }))
    );
    assert_parse_error(
        &post(&server, "schemas/_User", json!({})).await,
        103,
        "Class _User already exists.",
    );
    let (status, body) = put(
        &server,
        "schemas/_User",
        json!({"fields": {"nickname": {"type": "String"}, "username": {"type": "String"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fields"]["nickname"], json!({"type": "String"}));
    assert_eq!(body["fields"]["username"], json!({"type": "String"}));
    assert_parse_error(
        &put(
            &server,
            "schemas/_User",
            json!({"fields": {"email": {"__op": "Delete"}}}),
        )
        .await,
        136,
        "field email cannot be changed",
    );
    // Signing up still works, and keeps the new field.
    let (status, signed) = server
        .post(
            "users",
            json!({"username": "ann", "password": "pw", "nickname": "A"}),
        )
        .await;
    assert_eq!(status, 201, "{signed}");

    // Volatile classes answer their built-in schema.
    let (status, hooks) = get(&server, "schemas/_Hooks").await;
    assert_eq!(status, 200, "{hooks}");
    assert_eq!(
        hooks,
        json!({
            "className": "_Hooks",
            "fields": fields_with(json!({
                "functionName": {"type": "String"},
                "className": {"type": "String"},
                "triggerName": {"type": "String"},
                "url": {"type": "String"},
            })),
            "classLevelPermissions": {},
        })
    );

    // A system class Parse does not make at start is created like any.
    let (status, body) = post(
        &server,
        "schemas/_Installation",
        json!({"fields": {"extra": {"type": "Array"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fields"]["deviceToken"], json!({"type": "String"}));
    assert_eq!(body["fields"]["extra"], json!({"type": "Array"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_schema_routes_are_not_found() {
    let server = TestServer::start().await;
    assert_eq!(put(&server, "schemas", json!({})).await.0, 404);
    assert_eq!(delete(&server, "schemas").await.0, 404);
    assert_eq!(get(&server, "schemas/A/b").await.0, 404);
}
