-- Run by the postgres image on its first start (an empty data volume), as POSTGRES_USER.
-- Two databases, not two schemas of one: Optuna and MLflow both migrate with Alembic and would
-- share (and fight over) one `alembic_version` table.
CREATE DATABASE optuna;
CREATE DATABASE mlflow;
