#!/usr/bin/env bash
# Installs a Java runtime from Debian's packages if none is on PATH (Spark 4 needs Java 17
# or 21; the Spark tests run on local[2]). Prints the java binary it found or installed.
set -euo pipefail
if ! command -v java >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >&2
fi
java -version >&2
command -v java
