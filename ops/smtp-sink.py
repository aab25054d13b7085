"""A local SMTP server for the tests: writes each mail it receives, as
received, to <dir>/<n>.eml (n counts from 1), and prints "ready" once it
listens. aiosmtpd is installed into .oxbase/tools by ops/test.sh.

    PYTHONPATH=.oxbase/tools python3 ops/smtp-sink.py PORT DIR
"""

import asyncio
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.directory, f"{self.count}.eml")
        # Written whole, then renamed, so a reader never sees half a mail.
        with open(path + ".tmp", "wb") as out:
            out.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK"


async def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()


asyncio.run(main())
