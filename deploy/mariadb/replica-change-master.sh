#!/bin/bash
# /docker-entrypoint-initdb.d script for mariadb-replica (official mariadb image).
#
# Points this fresh server at mariadb-primary with GTID replication. Runs once, when the data
# volume is initialised, against the entrypoint's temporary server. A .sh init script because a
# .sql one cannot read the password from the environment. Works sourced or executed (see the
# primary's script).
#
# Why replication starts from an empty position and this server creates no database or user:
#   The replica's compose service sets no MARIADB_DATABASE / MARIADB_USER. The `docnum` database,
#   the `docnum` user and the replication user are all created on the primary and are in the
#   primary's binary log from its very first event, so the replica receives them by replication.
#   Creating them here as well would make the replicated CREATE statements fail (replication stops
#   with "database exists"). The entrypoint's own system users (root, healthcheck) are written
#   with sql_log_bin=0 on both servers and never conflict.
#   RESET MASTER drops anything this server may have binlogged during initialisation: with
#   gtid_strict_mode, a local GTID ahead of the primary's would stop replication.
#
# No START SLAVE here: the entrypoint's temporary server runs with --skip-slave-start and is
# stopped right after the init scripts. CHANGE MASTER stores the connection (master.info,
# relay-log.info, mysql.gtid_slave_pos), and the real server started next begins replicating by
# itself - retrying every MASTER_CONNECT_RETRY seconds until the primary is up.
#
# Adding a replica to a primary whose early binary logs have expired (expire_logs_days) does not
# work this way: seed it from a backup instead (docs/deploy.md, "Replica").
#
# Environment (from docker-compose.yml):
#   MARIADB_ROOT_PASSWORD         root password of this server
#   DOCNUM_PRIMARY_HOST           mariadb-primary
#   DOCNUM_REPLICATION_USER       account on the primary (repl)
#   DOCNUM_REPLICATION_PASSWORD   its password

docnum_sql_escape() {  # escape \ and ' for a single-quoted SQL string literal
    local s=${1//\\/\\\\}
    printf '%s' "${s//\'/\\\'}"
}

docnum_change_master() {
    local host user pass
    host=$(docnum_sql_escape "${DOCNUM_PRIMARY_HOST:?DOCNUM_PRIMARY_HOST is not set}")
    user=$(docnum_sql_escape "${DOCNUM_REPLICATION_USER:?DOCNUM_REPLICATION_USER is not set}")
    pass=$(docnum_sql_escape "${DOCNUM_REPLICATION_PASSWORD:?DOCNUM_REPLICATION_PASSWORD is not set}")
    MYSQL_PWD="${MARIADB_ROOT_PASSWORD}" mariadb --protocol=socket -uroot -hlocalhost \
        --socket="${SOCKET:-/run/mysqld/mysqld.sock}" <<-EOSQL
		SET SESSION sql_log_bin = 0;
		RESET MASTER;
		SET GLOBAL gtid_slave_pos = '';
		CHANGE MASTER TO
		    MASTER_HOST = '${host}',
		    MASTER_PORT = 3306,
		    MASTER_USER = '${user}',
		    MASTER_PASSWORD = '${pass}',
		    MASTER_USE_GTID = slave_pos,
		    MASTER_CONNECT_RETRY = 10;
	EOSQL
    echo "docnum: replica configured to follow ${DOCNUM_PRIMARY_HOST} (GTID, slave_pos)"
}

docnum_change_master
