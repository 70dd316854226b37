ALTER TABLE problems DROP COLUMN fix_change_id;
DROP TABLE change_freeze_windows;
DROP TABLE standard_change_templates;
DROP TABLE change_approval_policies;
DROP TABLE change_approvals;
DROP TABLE changes;
DROP SEQUENCE change_number_seq;
