-- Indexes for the web report, the API and the metrics collector.

-- Oldest pending delivery (metrics gauge): MIN(created_at) over pending rows
-- reads one entry of this partial index.
CREATE INDEX deliveries_pending_created ON deliveries (created_at)
    WHERE state IN ('queued', 'deferred');
-- The deferred queue by destination (report page "deferred").
CREATE INDEX deliveries_deferred_domain ON deliveries (domain, created_at)
    WHERE state = 'deferred';
