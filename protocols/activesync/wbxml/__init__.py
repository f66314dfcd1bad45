"""EAS WBXML (MS-ASWBXML): code pages 0-25, a strict bounded decoder, the encoder, and the
element tree the command handlers read and build. Sans-IO: bytes in, bytes out.

    from protocols.activesync.wbxml import E, decode, encode

    request = decode(body)                        # WbxmlError on anything malformed
    key = request.text_of("SyncKey")              # FolderSync request -> "0"
    body = encode(E("FolderHierarchy:FolderSync", E("FolderHierarchy:Status", 1)))
"""

from .codec import (
    DEFAULT_LIMITS,
    HEADER,
    MAX_DEPTH,
    MAX_DOCUMENT_SIZE,
    MAX_ELEMENTS,
    MAX_OPAQUE_LENGTH,
    MAX_STRING_LENGTH,
    Limits,
    decode,
    encode,
)
from .codepages import TagDef
from .element import Builder, Content, E, Element, build, clean_text, from_xml, to_xml
from .errors import WbxmlEncodeError, WbxmlError, WbxmlLimitError
from .tags import (
    Namespace,
    namespace_of,
    page_of,
    tag_at,
    tag_by_libwbxml_name,
    tag_named,
    tags_of,
)

__all__ = [
    "DEFAULT_LIMITS",
    "HEADER",
    "MAX_DEPTH",
    "MAX_DOCUMENT_SIZE",
    "MAX_ELEMENTS",
    "MAX_OPAQUE_LENGTH",
    "MAX_STRING_LENGTH",
    "Builder",
    "Content",
    "E",
    "Element",
    "Limits",
    "Namespace",
    "TagDef",
    "WbxmlEncodeError",
    "WbxmlError",
    "WbxmlLimitError",
    "build",
    "clean_text",
    "decode",
    "encode",
    "from_xml",
    "namespace_of",
    "page_of",
    "tag_at",
    "tag_by_libwbxml_name",
    "tag_named",
    "tags_of",
    "to_xml",
]
