#!/bin/bash
# /docker-entrypoint-initdb.d script for mariadb-primary (official mariadb image).
#
# Creates the account the replica connects with. Runs once, when the data volume is initialised,
# against the entrypoint's temporary server (socket only). A .sh init script because a .sql one
# cannot read the password from the environment.
#
# Works both when the entrypoint sources it (not executable in the checkout) and when it runs it
# (executable): it uses no entrypoint function, only the client and the environment, defines only
# docnum_* names, and never calls `exit`.
#
# This statement IS written to the binary log, on purpose: the replica applies it too, so after a
# promotion the old primary can replicate from the new one with the same account.
#
# Environment (from docker-compose.yml):
#   MARIADB_ROOT_PASSWORD         root password of this server
#   DOCNUM_REPLICATION_USER       account name (repl)
#   DOCNUM_REPLICATION_PASSWORD   its password

docnum_sql_escape() {  # escape \ and ' for a single-quoted SQL string literal
    local s=${1//\\/\\\\}
    printf '%s' "${s//\'/\\\'}"
}

docnum_create_replication_user() {
    local user pass
    user=$(docnum_sql_escape "${DOCNUM_REPLICATION_USER:?DOCNUM_REPLICATION_USER is not set}")
    pass=$(docnum_sql_escape "${DOCNUM_REPLICATION_PASSWORD:?DOCNUM_REPLICATION_PASSWORD is not set}")
    MYSQL_PWD="${MARIADB_ROOT_PASSWORD}" mariadb --protocol=socket -uroot -hlocalhost \
        --socket="${SOCKET:-/run/mysqld/mysqld.sock}" <<-EOSQL
		CREATE USER IF NOT EXISTS '${user}'@'%' IDENTIFIED BY '${pass}';
		GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '${user}'@'%';
	EOSQL
    echo "docnum: replication user '${DOCNUM_REPLICATION_USER}' created"
}

docnum_create_replication_user
