"""The report: the thesis' tables and figures rebuilt from one pipeline work directory.

`workdir` finds and reads the step folders (every part optional except infer-ab-hospital, and a
missing part is stated, never faked), `tables` rebuilds Tables 2, 3, 4, 5, 8 and 9 with relative
changes and paired DeLong tests, `figures` and `domain` draw the plots, `overlays` hooks in Grad-CAM,
`render` writes the self-contained HTML and the Markdown, and `build` ties them together.
"""
