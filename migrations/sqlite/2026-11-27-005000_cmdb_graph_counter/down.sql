DELETE FROM counters WHERE name = 'cmdb_graph';
