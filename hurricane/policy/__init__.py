"""Closed-loop delivery (issue 19): provider budgets that adapt, a breaker per mailing.

- :mod:`hurricane.policy.providers`: which provider a domain belongs to (MX
  roll-up), and its limits as they adapt to the receivers' answers.
- :mod:`hurricane.policy.breaker`: when a mailing's own outcomes hold it.
- :mod:`hurricane.policy.service`: the loop that ties them to the store and
  the outbound scheduler.

Every automatic action is a :class:`hurricane.policy.providers.PolicyAction`,
recorded as a ``policy`` event.
"""
