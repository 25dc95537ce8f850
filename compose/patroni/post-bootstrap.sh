#!/bin/sh
# Patroni runs this once, on the member that initialised the cluster, with a superuser
# connection URL: the database the nodes use (scripts/ha.sh creates it the same way).
set -eu
psql "$1" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE chattrio OWNER chattrio"
