"""Where teacher outputs come from: a live model now; a cache of recorded outputs plugs in behind the same call."""
from kdforge.teachers.base import TeacherOutput, TeacherSource
from kdforge.teachers.live import LiveTeacher

__all__ = ["LiveTeacher", "TeacherOutput", "TeacherSource"]
