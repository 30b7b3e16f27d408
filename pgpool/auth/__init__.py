"""Client and backend authentication: md5, SCRAM-SHA-256, pool_passwd, pool_hba.conf, the exchanges.

Modules: ``md5`` and ``scram`` (pure hashing and SCRAM state machines), ``pool_passwd`` (the
password file), ``hba`` (pool_hba.conf parser and matcher), ``exchange`` (the message exchanges
over an abstract MessageIO, pgpool as server to clients and as client to PostgreSQL).
"""
