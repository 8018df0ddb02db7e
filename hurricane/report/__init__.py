"""The web report, the JSON API and the Prometheus metrics, on one twisted.web site.

:func:`hurricane.report.web.build_web_site` builds the site for ``[web] listen``.
"""

__all__ = ["web", "api", "pages", "html", "resource", "charts", "csvexport", "metrics", "auth"]
