"""``arouter bench``: a lean load generator for relay speed and cancellation semantics.

Modules, in the order data flows through them:

- ``samples``  the values that pass between modules (one request's measurements, one upstream
  record); attrs only, no behaviour beyond parsing the upstream's JSON.
- ``http1``, ``events``  pure, sans-I/O: HTTP/1.1 request bytes and response parsing; what an
  OpenAI stream event says (content, error, end) without parsing JSON on the hot path.
- ``connection``  plain TCP on Trio's I/O waits: one system call per chunk received.
- ``client``  one request over a keep-alive connection: send, parse, time, abort.
- ``cpu``  process CPU time from ``/proc`` (the gateway and its children).
- ``workload``  the run: workers, abort plan, compare alternation, the upstream's records.
- ``stats``  pure: percentiles, histograms, summaries, cancel propagation, ratios.
- ``progress``  the progress line on stderr.
- ``svg``, ``report``  the JSON result, the text summary and the HTML report.
- ``cli``  options; mounted as ``arouter bench``.
"""
