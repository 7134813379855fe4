"""Permission-checked media with HTTP Range support (seeking in <video> needs byte ranges)."""

import mimetypes
import re

from django.contrib.auth.views import redirect_to_login
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from annotate.selectors import video_visible_to

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 256 * 1024


def _read_range(handle, start: int, length: int):
    handle.seek(start)
    remaining = length
    try:
        while remaining > 0:
            block = handle.read(min(_CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
            yield block
    finally:
        handle.close()


def ranged_response(request, *, name: str, size: int, open_binary) -> HttpResponse:
    """A file of ``size`` bytes whole (200) or the byte range the request asks for (206; 416 past the end);
    ``open_binary()`` opens it for reading, ``name`` gives its content type. The admin's job files use it too."""
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    match = _RANGE.match(request.headers.get("Range", ""))
    if not match or match.groups() == ("", ""):
        response = FileResponse(open_binary(), content_type=content_type)
    else:
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        response = StreamingHttpResponse(
            _read_range(open_binary(), start, end - start + 1), status=206, content_type=content_type
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _serve(request, field_file):
    if not field_file:
        raise Http404("no such file")
    name = field_file.name
    if not hasattr(default_storage, "path"):
        # Object storage: hand the browser a short-lived signed URL instead of proxying bytes.
        return HttpResponseRedirect(default_storage.url(name))
    try:
        size = default_storage.size(name)
    except FileNotFoundError:  # the row outlived its file (a restore, a wiped volume): not a server error
        raise Http404("the video's file is missing from the media store") from None
    return ranged_response(request, name=name, size=size, open_binary=lambda: default_storage.open(name, "rb"))


def _requester(request):
    """The session's user, or the API client's (``Authorization: Token …``, as the API that handed out the
    media URL accepts); None when neither."""
    if request.user.is_authenticated:
        return request.user
    try:
        found = TokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    return found[0] if found else None


def _video_media(request, video_id: int, field: str):
    user = _requester(request)
    if user is None:
        return redirect_to_login(request.get_full_path())
    video = video_visible_to(video_id=video_id, user=user)
    if video is None:
        raise Http404("no such video in your assignments")
    return _serve(request, getattr(video, field))


@require_safe
def video_file(request, video_id: int):
    return _video_media(request, video_id, "file")


@require_safe
def video_poster(request, video_id: int):
    return _video_media(request, video_id, "poster")
