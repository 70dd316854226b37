-- Advanced by every transaction that changes the CMDB's graph (items as impact walks show
-- them, relationships): a node's in-memory copy of the graph is current while it matches.
INSERT INTO counters (name, value) VALUES ('cmdb_graph', 0);
