"""Seeds the Bench class: N objects, `group` = i % (N/10), so every group
has 10 objects. Writes the created ids, one per line, to the given file.
With BENCH_ACL set (a JSON ACL), every object gets that ACL."""
import json
import os
import sys
import urllib.request

base, app_id, count, ids_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
groups = count // 10
acl = json.loads(os.environ["BENCH_ACL"]) if os.environ.get("BENCH_ACL") else None
ids = []
for start in range(0, count, 50):
    requests = [
        {"method": "POST", "path": "/parse/classes/Bench",
         "body": {"group": i % groups, "score": i, "name": f"player {i}", "tags": ["a", "b"],
                  **({"ACL": acl} if acl else {})}}
        for i in range(start, min(start + 50, count))
    ]
    req = urllib.request.Request(
        base + "/batch", data=json.dumps({"requests": requests}).encode(),
        headers={"X-Parse-Application-Id": app_id, "Content-Type": "application/json"})
    for item in json.load(urllib.request.urlopen(req)):
        ids.append(item["success"]["objectId"])
with open(ids_file, "w") as f:
    f.write("\n".join(ids) + "\n")
