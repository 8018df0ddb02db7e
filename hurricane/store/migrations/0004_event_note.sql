-- Why an event changed nothing it could have changed, for the operator:
-- "recorded, not applied: unverified correlation" on a bounce or complaint
-- that only a weak key (a bare address, a Message-ID...) matched
-- (hurricane/decisions.py).

ALTER TABLE events ADD COLUMN note TEXT;
