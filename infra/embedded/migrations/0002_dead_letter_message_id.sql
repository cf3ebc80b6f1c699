-- A receive moves an exhausted message in two statements (copy, then
-- delete) instead of one transaction; this index makes the copy idempotent,
-- so a crash between the two never yields two dead letters for one message.
-- Message ids are unique in `queue_messages`, so existing rows comply.
CREATE UNIQUE INDEX queue_dead_letters_message ON queue_dead_letters (message_id);
