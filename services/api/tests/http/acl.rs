//! Who may read and write what: ACLs, roles, relations, class-level
//! permissions, protected fields and the master keys.

use oxbase_kit::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, read};
use crate::users::{as_user, signup};

fn code(response: &(u16, Value)) -> i64 {
    response.1["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code in {response:?}"))
}

async fn master(server: &TestServer, method: Method, path: &str, body: Value) -> (u16, Value) {
    server.master_json(method, path, Some(body)).await
}

fn ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|o| o["objectId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_object_is_invisible_to_others_everywhere() {
    let server = TestServer::start_with(|c| c.allow_client_class_creation = true).await;
    let ann = signup(&server, "ann").await;
    let bob = signup(&server, "bob").await;
    let acl = json!({ann.id.clone(): {"read": true, "write": true}});
    let (status, diary) = as_user(
        &server,
        &ann.token,
        Method::POST,
        "classes/Diary",
        Some(json!({"text": "secret", "ACL": acl})),
    )
    .await;
    assert_eq!(status, 201, "{diary}");
    let diary_id = diary["objectId"].as_str().unwrap().to_owned();
    let (_, public) = server.post("classes/Diary", json!({"text": "open"})).await;
    let public_id = public["objectId"].as_str().unwrap().to_owned();
    let pointer = json!({"__type": "Pointer", "className": "Diary", "objectId": diary_id});
    let (_, shelf) = server
        .post(
            "classes/Shelf",
            json!({"diary": pointer, "diaries": [pointer]}),
        )
        .await;
    let shelf_path = format!("classes/Shelf/{}", shelf["objectId"].as_str().unwrap());
    let diary_path = format!("classes/Diary/{diary_id}");

    // Ann sees it through every route.
    let (status, got) = as_user(&server, &ann.token, Method::GET, &diary_path, None).await;
    assert_eq!((status, got["text"].clone()), (200, json!("secret")));
    let (_, found) = as_user(
        &server,
        &ann.token,
        Method::GET,
        "classes/Diary?count=1",
        None,
    )
    .await;
    assert_eq!(found["count"], 2);
    let (_, shelf_seen) = as_user(
        &server,
        &ann.token,
        Method::GET,
        &format!("{shelf_path}?include=diary,diaries"),
        None,
    )
    .await;
    assert_eq!(shelf_seen["diary"]["text"], "secret");

    // Bob and anonymous clients do not, through get, find, count, include,
    // $inQuery or a batch.
    for token in [Some(bob.token.as_str()), None] {
        let call = |method: Method, path: String| {
            let server = &server;
            async move {
                match token {
                    Some(token) => as_user(server, token, method, &path, None).await,
                    None => server.json(method, &path, None).await,
                }
            }
        };
        let hidden = call(Method::GET, diary_path.clone()).await;
        assert_eq!((hidden.0, code(&hidden)), (404, 101));
        let (_, found) = call(Method::GET, "classes/Diary?count=1".into()).await;
        assert_eq!(ids(&found), vec![public_id.clone()]);
        assert_eq!(found["count"], 1);
        let (_, shelf_seen) =
            call(Method::GET, format!("{shelf_path}?include=diary,diaries")).await;
        assert!(shelf_seen.get("diary").is_none(), "{shelf_seen}");
        assert_eq!(shelf_seen["diaries"], json!([]));
        let where_ =
            json!({"diary": {"$inQuery": {"className": "Diary", "where": {"text": "secret"}}}});
        let (_, sub) = call(
            Method::GET,
            format!("classes/Shelf?where={}", urlencode(&where_)),
        )
        .await;
        assert_eq!(
            sub["results"],
            json!([]),
            "an $inQuery must not see the hidden object"
        );
    }
    let (_, batch) = as_user(
        &server,
        &bob.token,
        Method::POST,
        "batch",
        Some(json!({"requests": [{"method": "GET", "path": format!("/parse/{diary_path}")}]})),
    )
    .await;
    assert_eq!(batch[0]["error"]["code"], 101, "{batch}");

    // Nor may Bob change or delete it, alone or in a batch.
    let update = as_user(
        &server,
        &bob.token,
        Method::PUT,
        &diary_path,
        Some(json!({"text": "mine"})),
    )
    .await;
    assert_eq!((update.0, code(&update)), (404, 101));
    let delete = as_user(&server, &bob.token, Method::DELETE, &diary_path, None).await;
    assert_eq!((delete.0, code(&delete)), (404, 101));
    let (_, batch) = as_user(
        &server,
        &bob.token,
        Method::POST,
        "batch",
        Some(json!({"requests": [{"method": "PUT", "path": format!("/parse/{diary_path}"), "body": {"text": "mine"}}]})),
    )
    .await;
    assert_eq!(batch[0]["error"]["code"], 101, "{batch}");
    let stored = server.all("Diary").await;
    assert!(stored.iter().any(|d| d["text"] == "secret"), "{stored:?}");

    // Read-only for others: readable, not writable.
    let acl = json!({"*": {"read": true}, ann.id.clone(): {"write": true}});
    let (_, shared) = as_user(
        &server,
        &ann.token,
        Method::POST,
        "classes/Diary",
        Some(json!({"text": "shared", "ACL": acl})),
    )
    .await;
    let shared_path = format!("classes/Diary/{}", shared["objectId"].as_str().unwrap());
    let (status, _) = as_user(&server, &bob.token, Method::GET, &shared_path, None).await;
    assert_eq!(status, 200);
    let refused = as_user(
        &server,
        &bob.token,
        Method::PUT,
        &shared_path,
        Some(json!({"text": "x"})),
    )
    .await;
    assert_eq!(code(&refused), 101);
    let (status, _) = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &shared_path,
        Some(json!({"text": "y"})),
    )
    .await;
    assert_eq!(status, 200);
}

fn urlencode(value: &Value) -> String {
    let text = value.to_string();
    form_encode(&text)
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_of_roles_grant_access_and_relations_query() {
    let server = TestServer::start().await;
    let ann = signup(&server, "ann").await;
    let bob = signup(&server, "bob").await;
    let user = |id: &str| json!({"__type": "Pointer", "className": "_User", "objectId": id});
    // Staff holds Ann; Admins is a member role of Staff... the other way:
    // Staff's `roles` holds Editors, so Editors' users are Staff too.
    let (status, editors) = master(
        &server,
        Method::POST,
        "roles",
        json!({"name": "Editors", "ACL": {"*": {"read": true}}, "users": {"__op": "AddRelation", "objects": [user(&ann.id)]}}),
    )
    .await;
    assert_eq!(status, 201, "{editors}");
    let editors_id = editors["objectId"].as_str().unwrap();
    let (status, staff) = master(
        &server,
        Method::POST,
        "roles",
        json!({"name": "Staff", "ACL": {"*": {"read": true}}, "roles": {"__op": "AddRelation", "objects": [{"__type": "Pointer", "className": "_Role", "objectId": editors_id}]}}),
    )
    .await;
    assert_eq!(status, 201, "{staff}");
    let (status, memo) = master(
        &server,
        Method::POST,
        "classes/Memo",
        json!({"text": "staff only", "ACL": {"role:Staff": {"read": true}}}),
    )
    .await;
    assert_eq!(status, 201);
    let memo_path = format!("classes/Memo/{}", memo["objectId"].as_str().unwrap());
    let (status, seen) = as_user(&server, &ann.token, Method::GET, &memo_path, None).await;
    assert_eq!((status, seen["text"].clone()), (200, json!("staff only")));
    let hidden = as_user(&server, &bob.token, Method::GET, &memo_path, None).await;
    assert_eq!(code(&hidden), 101);

    // Adding Bob to Editors takes effect on his next request.
    let path = format!("roles/{editors_id}");
    let (status, _) = master(
        &server,
        Method::PUT,
        &path,
        json!({"users": {"__op": "AddRelation", "objects": [user(&bob.id)]}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = as_user(&server, &bob.token, Method::GET, &memo_path, None).await;
    assert_eq!(status, 200);

    // Relation fields read back as relations and answer $relatedTo.
    let (_, role) = read(server.master(Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(
        role["users"],
        json!({"__type": "Relation", "className": "_User"})
    );
    let where_ = json!({"$relatedTo": {"object": {"__type": "Pointer", "className": "_Role", "objectId": editors_id}, "key": "users"}});
    let (status, members) = read(
        server
            .master(Method::GET, "users")
            .query(&[("where", where_.to_string())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{members}");
    let mut expected = vec![ann.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(ids(&members), expected);
    let (_, removed) = master(
        &server,
        Method::PUT,
        &path,
        json!({"users": {"__op": "RemoveRelation", "objects": [user(&ann.id)]}}),
    )
    .await;
    assert!(removed.get("updatedAt").is_some(), "{removed}");

    // Role names: validated, unique, and fixed once saved.
    let bad = master(
        &server,
        Method::POST,
        "roles",
        json!({"name": "no/slashes", "ACL": {}}),
    )
    .await;
    assert_eq!(code(&bad), 139);
    let missing = master(&server, Method::POST, "roles", json!({"ACL": {}})).await;
    assert_eq!(code(&missing), 139);
    let dup = master(
        &server,
        Method::POST,
        "roles",
        json!({"name": "Staff", "ACL": {}}),
    )
    .await;
    assert_eq!(code(&dup), 137);
    let rename = master(&server, Method::PUT, &path, json!({"name": "Writers"})).await;
    assert_eq!(code(&rename), 139);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_level_permissions_are_enforced() {
    let server = TestServer::start().await;
    let ann = signup(&server, "ann").await;
    let bob = signup(&server, "bob").await;
    let owner = |id: &str| json!({"__type": "Pointer", "className": "_User", "objectId": id});
    let (status, body) = master(
        &server,
        Method::POST,
        "schemas/Ticket",
        json!({
            "className": "Ticket",
            "fields": {"title": {"type": "String"}, "owner": {"type": "Pointer", "targetClass": "_User"}, "secret": {"type": "String"}},
            "classLevelPermissions": {
                "find": {"requiresAuthentication": true},
                "count": {"requiresAuthentication": true},
                "get": {"requiresAuthentication": true},
                "create": {"*": true},
                "update": {},
                "delete": {},
                "addField": {},
                "readUserFields": [],
                "writeUserFields": ["owner"],
                "protectedFields": {"*": ["secret"]}
            }
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, ticket) = as_user(
        &server,
        &ann.token,
        Method::POST,
        "classes/Ticket",
        Some(json!({"title": "t", "owner": owner(&ann.id), "secret": "s"})),
    )
    .await;
    assert_eq!(status, 201, "{ticket}");
    let path = format!("classes/Ticket/{}", ticket["objectId"].as_str().unwrap());

    // Reads need a session.
    let anonymous = server.get("classes/Ticket").await;
    assert_eq!(code(&anonymous), 101);
    let (status, found) = as_user(&server, &bob.token, Method::GET, "classes/Ticket", None).await;
    assert_eq!(status, 200);
    assert_eq!(found["results"][0]["title"], "t");
    assert!(
        found["results"][0].get("secret").is_none(),
        "protected: {found}"
    );

    // Updates only through the owner pointer.
    let refused = as_user(
        &server,
        &bob.token,
        Method::PUT,
        &path,
        Some(json!({"title": "b"})),
    )
    .await;
    assert_eq!(code(&refused), 101, "{:?}", refused.1);
    let (status, _) = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &path,
        Some(json!({"title": "a"})),
    )
    .await;
    assert_eq!(status, 200);
    // No new fields for clients; deletes only through the owner pointer.
    let add = as_user(
        &server,
        &ann.token,
        Method::PUT,
        &path,
        Some(json!({"extra": 1})),
    )
    .await;
    assert_eq!(code(&add), 119);
    let delete = as_user(&server, &bob.token, Method::DELETE, &path, None).await;
    assert_eq!(code(&delete), 101);
    let (status, _) = as_user(&server, &ann.token, Method::DELETE, &path, None).await;
    assert_eq!(status, 200);
    // Creating is open, but not with a new field.
    let new_field = as_user(
        &server,
        &bob.token,
        Method::POST,
        "classes/Ticket",
        Some(json!({"title": "x", "extra": 1})),
    )
    .await;
    assert_eq!(code(&new_field), 119);

    // A protected field cannot be learnt through where, order or keys.
    as_user(
        &server,
        &ann.token,
        Method::POST,
        "classes/Ticket",
        Some(json!({"title": "t2", "owner": owner(&ann.id), "secret": "s2"})),
    )
    .await;
    for query in [
        vec![("where", json!({"secret": "s2"}).to_string())],
        vec![("where", json!({"secret": {"$regex": "^s"}}).to_string())],
        vec![(
            "where",
            json!({"$or": [{"secret": {"$exists": true}}]}).to_string(),
        )],
        vec![("order", "secret".to_owned())],
        vec![("order", "-secret".to_owned())],
    ] {
        let response = read(
            server
                .request(Method::GET, "classes/Ticket")
                .header("X-Parse-Session-Token", &bob.token)
                .query(&query)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((response.0, code(&response)), (400, 119), "{query:?}");
    }
    let (status, keyed) = read(
        server
            .request(Method::GET, "classes/Ticket")
            .header("X-Parse-Session-Token", &bob.token)
            .query(&[("keys", "secret,title")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(keyed["results"][0].get("secret").is_none(), "{keyed}");
    assert_eq!(keyed["results"][0]["title"], "t2");

    // The master key sees everything.
    let all = server.all("Ticket").await;
    assert_eq!(all[0]["secret"], "s2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_keys_are_limited_by_address_and_the_read_only_key_cannot_write() {
    let server = TestServer::start_with(|c| {
        c.read_only_master_key = Some(Secret::new("reader"));
    })
    .await;
    master(
        &server,
        Method::POST,
        "classes/Log",
        json!({"line": 1, "ACL": {}}),
    )
    .await;
    let reader = |method: Method, path: &str| {
        server
            .request(method, path)
            .header("X-Parse-Master-Key", "reader")
    };
    // Reads see even objects no ACL grants.
    let (status, body) = read(reader(Method::GET, "classes/Log").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    for (method, path, body) in [
        (Method::POST, "classes/Log", json!({"line": 2})),
        (
            Method::POST,
            "users",
            json!({"username": "x", "password": "y"}),
        ),
    ] {
        let response = read(reader(method, path).json(&body).send().await.unwrap()).await;
        assert_eq!((response.0, code(&response)), (400, 119), "{path}");
    }
    let id = server.all("Log").await[0]["objectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = read(
        reader(Method::DELETE, &format!("classes/Log/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code(&response), 119);

    // From an address outside master_key_ips the master key is refused.
    let remote = TestServer::start_with(|c| c.master_key_ips = vec!["10.0.0.0/8".into()]).await;
    let (status, body) = read(
        remote
            .master(Method::GET, "classes/Log")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (403, json!({"error": "unauthorized"})));
    let (status, _) = remote.get("classes/Log").await;
    assert_eq!(status, 200, "client requests are not affected");
}
