import django_filters
from django.db.models import QuerySet

from instruments.models import Instrument
from instruments.selectors import instruments_search


class InstrumentFilter(django_filters.FilterSet):
    exchange = django_filters.CharFilter(
        method="filter_upper", help_text="e.g. NSE, NFO (comma-separated for several)"
    )
    segment = django_filters.CharFilter(method="filter_upper", help_text="e.g. NFO-OPT, INDICES")
    instrument_type = django_filters.CharFilter(method="filter_upper", help_text="EQ, FUT, CE, PE")
    name = django_filters.CharFilter(
        field_name="name", lookup_expr="iexact", help_text="Underlying name, e.g. NIFTY"
    )
    expiry_from = django_filters.DateFilter(field_name="expiry", lookup_expr="gte")
    expiry_to = django_filters.DateFilter(field_name="expiry", lookup_expr="lte")
    is_active = django_filters.BooleanFilter()
    listed = django_filters.BooleanFilter(
        field_name="is_listed", help_text="Default: listed only. false: delisted."
    )
    source = django_filters.CharFilter()
    search = django_filters.CharFilter(
        method="filter_search",
        help_text="Symbol prefix, name fragment or exact token; exact matches first, then prefixes, then the rest.",
    )

    class Meta:
        model = Instrument
        fields: list[str] = []

    def filter_upper(self, queryset: QuerySet[Instrument], name: str, value: str) -> QuerySet[Instrument]:
        values = [v.strip().upper() for v in value.split(",") if v.strip()]
        return queryset.filter(**{f"{name}__in": values}) if values else queryset

    def filter_search(self, queryset: QuerySet[Instrument], name: str, value: str) -> QuerySet[Instrument]:
        return instruments_search(queryset, term=value)
