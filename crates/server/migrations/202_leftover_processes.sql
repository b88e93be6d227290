ALTER TABLE executions ADD COLUMN leftover_processes BIGINT NOT NULL DEFAULT 0;
