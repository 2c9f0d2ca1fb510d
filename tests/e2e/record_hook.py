"""A hook that records its input: appends the hook's stdin JSON as one line to argv[1].

Installed by the e2e tests next to ``peers-hook`` so a test can see what the real client
passed (``stop_hook_active`` on the second Stop, ``tool_name`` formats, session ids).
It prints nothing, so it adds nothing to the session.
"""

import json
import sys

raw = sys.stdin.read()
try:
    data = json.loads(raw)
except ValueError:
    data = {"unparsed": raw}
with open(sys.argv[1], "a", encoding="utf-8") as f:
    f.write(json.dumps(data) + "\n")
