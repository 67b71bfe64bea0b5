"""picamera2.outputs.Output, as in picamera2 (what encoders write encoded frames to)."""


class Output:
    def __init__(self, pts=None) -> None:
        self.recording = False
        self.ptsoutput = pts

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False) -> None:
        pass
