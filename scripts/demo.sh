#!/usr/bin/env bash
# One real job on the embedded default (no Redis): start the API and a worker, make a small
# git repo, ask the agent to add a CONTRIBUTING.md, follow it to the end, then stop.
# Uses `claude` if it is installed, otherwise the fake agent the tests use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
demo=$(mktemp -d -t agenticore-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

unset AGENTICORE_REDIS_URL
export AGENTICORE_HOME="$demo/home" AGENTICORE_ALLOW_LOCAL_REPOS=true AGENTICORE_PORT="$port"
export AGENTICORE_API_URL="http://127.0.0.1:$port"
if ! command -v claude >/dev/null 2>&1; then
  export AGENTICORE_CLAUDE_BIN="$root/tests/fake_claude/claude"
  echo "no 'claude' on PATH: using the fake agent ($AGENTICORE_CLAUDE_BIN)"
fi

git init -q -b main "$demo/widgets"
printf '# widgets\n\nA tiny demo project.\n' > "$demo/widgets/README.md"
git -C "$demo/widgets" add -A
git -C "$demo/widgets" -c user.name=demo -c user.email=demo@example.com commit -q -m "initial"
git clone -q --bare "$demo/widgets" "$demo/widgets.git"

agenticore up --no-flower >"$demo/up.log" 2>&1 &
up_pid=$!
trap 'kill "$up_pid" 2>/dev/null; wait "$up_pid" 2>/dev/null; echo "logs and data: $demo"' EXIT

for _ in $(seq 1 120); do
  agenticore status >/dev/null 2>&1 && break
  sleep 0.5
done
agenticore status

agenticore run "Add a CONTRIBUTING.md" --repo "$demo/widgets.git" --wait
agenticore jobs
