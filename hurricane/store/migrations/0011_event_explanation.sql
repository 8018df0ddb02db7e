-- Why a server refused (or deferred) a recipient during our own SMTP
-- session (issue 22 item 6): what the attempt's other columns do not hold of
-- the reply classifier's explanation, as a small JSON object
-- (hurricane.decisions.explain_reply): the phase (the command our client was
-- sending, and its stage), whether the rule inferred the enhanced status,
-- the classifier's reason, what decided it (the rule, or the status table's
-- entry when the rule column is NULL) and the runner-up it beat. With the
-- event's code, status, text and remote host it is the recipient page's
-- "Why" (hurricane.report.api.event_explanation), beside the explanations of
-- returned messages. Attempt events only; every other row, and every row
-- written before this migration, leaves it NULL.

ALTER TABLE events ADD COLUMN explanation TEXT;
