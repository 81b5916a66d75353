"""API pagination: ``page`` and ``page_size``, and a page that does not exist is a 400 that
says why (DRF answers 404, which reads as "no such endpoint")."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request


class StrictPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000
    invalid_page_message = "Invalid page {page_number!r}: {message}."

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound as exc:
            raise ValidationError({"page": [str(exc.detail)]}) from None
