#!/usr/bin/env bash
# Make sure this machine can run flowrec: a Java runtime (17+) for Flink, a
# redis-server binary for the embedded local Redis, and (for the browser test)
# Debian's chromium + chromedriver, (for the reverse-proxy recipe's test) nginx,
# and jemalloc, the allocator the job's JVM prefers (optional: without it the
# job runs on glibc's malloc, tuned, and holds more memory; never an error).
# Installs Debian packages when running as root with apt; otherwise prints the
# one command the user must run.
#
#   deploy/bootstrap.sh java|redis|chromium|nginx|jemalloc ...
set -euo pipefail

need_apt=()
want_apt=()  # optional: installed when we can, otherwise only mentioned

java_ok() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$java" >/dev/null 2>&1 || return 1
  local v
  v=$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ -n "$v" ] && [ "$v" -ge 17 ]
}

for what in "$@"; do
  case "$what" in
    java)
      if ! java_ok; then need_apt+=(openjdk-17-jre-headless); fi ;;
    redis)
      command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server) ;;
    chromium)
      { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || need_apt+=(chromium chromium-driver) ;;
    nginx)
      command -v nginx >/dev/null 2>&1 || need_apt+=(nginx) ;;
    jemalloc)
      { command -v ldconfig >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin"; ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so'; } || want_apt+=(libjemalloc2) ;;
    *) echo "bootstrap: unknown component '$what'" >&2; exit 2 ;;
  esac
done

can_apt=no
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then can_apt=yes; fi
if [ ${#want_apt[@]} -gt 0 ]; then
  if [ "$can_apt" = yes ]; then
    need_apt+=("${want_apt[@]}")
  else
    echo "bootstrap: optional ${want_apt[*]} is not installed (the job then holds more memory); to add it: sudo apt-get install -y ${want_apt[*]}" >&2
  fi
fi

[ ${#need_apt[@]} -eq 0 ] && exit 0

if [ "$can_apt" = yes ]; then
  echo "bootstrap: installing ${need_apt[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # redis-server's and nginx's packages start a service (6379, 80) on some images; we never use them.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  exit 0
fi

echo "bootstrap: missing ${need_apt[*]}. Run this once, then retry:" >&2
echo "    sudo apt-get install -y ${need_apt[*]}" >&2
exit 1
