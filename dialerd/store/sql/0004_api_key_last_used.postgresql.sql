-- When each API key last authenticated a request (`dialerd keys list`), written at most once a minute
-- per key (dialerd/services/auth.py), so operators can tell which keys are still in use before revoking.
ALTER TABLE api_key ADD COLUMN last_used_at TIMESTAMP WITH TIME ZONE;
