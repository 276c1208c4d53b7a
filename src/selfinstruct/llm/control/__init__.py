"""The control loop around each call: how many calls at once, where to, how often, and twins.

- admission: the adaptive limit of calls in flight and the Retry-After gate, per endpoint;
- breaker: takes a failing endpoint out of the routing and probes it back in;
- routing: which endpoint takes the next call (least outstanding work among the healthy);
- hedging: when a call that runs long gets a twin, within a budget;
- retry: when a failed call is tried again, after how long;
- attempt: one request from "not stored" to "answered" or "gave up", using all of the above.
"""
