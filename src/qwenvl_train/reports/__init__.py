"""Picture reports: what ``check-data --report DIR`` and ``eval --report DIR`` write, and the demo's plots.

A report is one folder: ``index.html`` (no script, no link to anywhere: it opens from the disk) with its pictures
as files beside it under ``images/``. One module per concern:

- :mod:`.page`: the HTML page (every text escaped), written last so a half-written report never looks complete;
- :mod:`.pictures`: a picture with boxes and quads drawn and labelled (coordinates mapped with
  :func:`qwenvl_train.format.boxes.to_pixels`), saved beside the page;
- :mod:`.plots`: matplotlib figures (Agg backend, imported only when a plot is drawn): the length histogram
  and the loss curve;
- :mod:`.check_data`: ``check-data --report`` (the counts, the errors, the histogram, a gallery of samples);
- :mod:`.evaluation`: ``eval --report`` (the metrics table, a gallery worst IoU first);
- :mod:`.benchmark`: ``eval --benchmark ... --report`` (the metrics, the breakdowns with their charts, the
  answers lowest score first, grounding boxes drawn).

Bad input never stops a report: a picture that cannot be read is a one-line note where it would have been.
"""
