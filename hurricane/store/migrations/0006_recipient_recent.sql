-- "The newest deliveries to this address since T" (bounce correlation by a
-- bare recipient or ORCPT, hurricane/inbound/correlate.py): with only
-- lower(recipient) indexed, each look-up read the address's whole history
-- to sort it, so a returned message naming a seed address with 30,000
-- deliveries cost seconds (issue 23's second review). In this order the
-- LIMIT reads only the rows it returns, newest first, on both engines.
-- deliveries_recipient stays: the report's search by recipient reads it in
-- delivery id order.

CREATE INDEX deliveries_recipient_recent ON deliveries (lower(recipient), created_at, delivery_id);
