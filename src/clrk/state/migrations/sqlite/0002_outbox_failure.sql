-- Why an outbox entry was given up (the receiver refused it for good, e.g. Slack's
-- channel_not_found). Such an entry is settled like a sent one (sent_at is set), so no
-- deliverer picks it up again; a null failure with a sent_at means it was delivered.
alter table clrk_outbox add column failure text;
