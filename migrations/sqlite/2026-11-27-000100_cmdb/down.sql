DROP TABLE ci_relationships;
DROP TABLE ci_identifiers;
DROP TABLE configuration_items;
DROP TABLE ci_classes;
