-- Why a server refused (or deferred) a recipient during our own SMTP
-- session (issue 22 item 6): the reply classifier's evidence (the stage and
-- the command our client was sending, the reply code, the enhanced status,
-- the text, the remote MTA) and its decision (the reason, the rule or status
-- entry that decided it, the runner-up it beat), as JSON text with the keys
-- of a returned message's result (hurricane.decisions.explain_reply). The
-- recipient page shows it beside the explanations of returned messages.
-- Attempt events only; every other row, and every row written before this
-- migration, leaves it NULL.

ALTER TABLE events ADD COLUMN explanation TEXT;
