"""``python -m fastnn.demo``: draw a digit (or a piece of clothing) and watch the network read it.

Arguments for one library call, ``fastnn.demos.window.Demo`` (with ``--web``:
``fastnn.demos.web.serve``): those modules say what they do; ``python -m fastnn.demo --help``
lists the options.
"""
from __future__ import annotations

import argparse
import sys

from fastnn.common.cli import HelpFormatter, add_data_dir_option, int_at_least, regular_file, run_main
from fastnn.common.errors import UserError
from fastnn.data.datasets import DATASETS
from fastnn.demos.window import SAMPLE_SEVEN, Demo


def main(argv=None) -> int:
    return run_main(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fastnn.demo",
        description="Draw a digit with the mouse and watch the network classify it live: the 28x28 input as the "
                    "network sees it, the class probabilities and the hidden activations. Buttons: Clear, Random "
                    "test image, MNIST / Fashion-MNIST. Needs a display (or run Demo() in Jupyter with "
                    "%%matplotlib widget).",
        formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="mnist", choices=list(DATASETS), help="whose pretrained model to start with")
    p.add_argument("--model", default=None, help="a best_model.npz of your own instead of the pretrained model")
    add_data_dir_option(p, "where the test images are, for the Random test image button (default: $FASTNN_DATA_DIR, "
                        "else the user cache)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seeds the Random test image button")
    p.add_argument("--web", action="store_true",
                   help="the same in a web page instead of a window: a local server (fastnn.demos.web) serving one "
                        "self-contained page; open the address it prints")
    p.add_argument("--host", default="127.0.0.1", help="with --web: the address to listen on (0.0.0.0: every "
                                                       "interface, reachable from other machines)")
    p.add_argument("--port", type=int_at_least(0), default=8000, help="with --web: the port (0: any free one)")
    p.add_argument("--screenshot", default=None, metavar="FILE",
                   help="no window: draw a sample 7 with synthetic mouse strokes, save the figure as FILE (PNG) "
                        "and exit (how plots/demo.png is made)")
    args = p.parse_args(argv)
    if args.web:
        from fastnn.demos.web import serve

        if args.port > 65535:
            raise UserError(f"--port {args.port} is not a port number (0-65535)")
        if args.screenshot:
            raise UserError("--screenshot is for the matplotlib demo; the web page's is taken by "
                            "tests/demos/test_web.py")
        model = str(regular_file(args.model, "model file")) if args.model else None
        try:
            serve(args.host, args.port, model, args.data_dir, args.seed)
        except OSError as exc:
            raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose another "
                            f"--host or --port") from None
        return 0
    import matplotlib

    if args.screenshot:
        matplotlib.use("Agg")
        from fastnn.common.plotting import save_figure

        demo = Demo(args.dataset, args.model, args.data_dir, args.seed)
        probs = demo.draw_strokes(SAMPLE_SEVEN)
        prediction = demo.prediction
        save_figure(demo.fig, args.screenshot, dpi=100)
        print(f"drew a sample 7: the network reads {prediction} ({probs.max():.2f}); wrote {args.screenshot}")
        return 0

    if matplotlib.get_backend().lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
        raise UserError(f"matplotlib's backend is {matplotlib.get_backend()!r}, which has no window: run this on a "
                        f"desktop (or set MPLBACKEND=TkAgg / QtAgg), or use Demo() in Jupyter with %matplotlib widget")
    Demo(args.dataset, args.model, args.data_dir, args.seed).show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
