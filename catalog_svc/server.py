"""CatalogService servicer: proto <-> model translation only."""

from __future__ import annotations

import grpc
from shop.catalog.v1 import catalog_pb2 as pb
from shop.catalog.v1 import catalog_pb2_grpc

from catalog_svc.convert import category_pb, draft_of, product_pb, search_response
from catalog_svc.recs import AlsoBoughtService, Source
from catalog_svc.search import SearchService
from catalog_svc.service import CatalogService
from meshkit.context import current_principal
from meshkit.errors import InvalidArgument

_SOURCE = {
    Source.CACHE: pb.ALSO_BOUGHT_SOURCE_CACHE,
    Source.CO_PURCHASE: pb.ALSO_BOUGHT_SOURCE_CO_PURCHASE,
    Source.CATEGORY_TOP_SELLERS: pb.ALSO_BOUGHT_SOURCE_CATEGORY_TOP_SELLERS,
}


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(
        self, catalog: CatalogService, search: SearchService, also_bought: AlsoBoughtService
    ) -> None:
        self._catalog = catalog
        self._search = search
        self._also_bought = also_bought

    async def GetProduct(
        self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProductResponse:
        principal = current_principal()
        encoded = await self._catalog.get_product_encoded(
            request.product_id, include_inactive=principal is not None and principal.is_admin
        )
        response = pb.GetProductResponse()
        response.product.MergeFromString(encoded)  # parsing in C is far cheaper than building it
        return response

    async def BatchGetProducts(
        self, request: pb.BatchGetProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetProductsResponse:
        if not request.product_ids:  # REQUIRED in the proto (internal callers may pass none)
            raise InvalidArgument("product_ids", "at least one id is required")
        products, missing = await self._catalog.batch_get(list(request.product_ids))
        return pb.BatchGetProductsResponse(
            products=[product_pb(p) for p in products], not_found_product_ids=missing
        )

    async def ListProducts(
        self, request: pb.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProductsResponse:
        products, token = await self._catalog.list_products(
            category_id=request.category_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListProductsResponse(products=[product_pb(p) for p in products], next_page_token=token)

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchProductsResponse:
        page = await self._search.search(
            q=request.q,
            category_path=request.category_path,
            min_price=request.min_price if request.HasField("min_price") else None,
            max_price=request.max_price if request.HasField("max_price") else None,
            brands=list(request.brands),
            min_rating=request.min_rating if request.HasField("min_rating") else None,
            in_stock=request.in_stock,
            page=request.page,
        )
        return search_response(page)

    async def GetAlsoBought(
        self, request: pb.GetAlsoBoughtRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAlsoBoughtResponse:
        result = await self._also_bought.get(request.product_id, limit=request.limit)
        return pb.GetAlsoBoughtResponse(
            recommendations=[
                pb.AlsoBoughtRecommendation(product=product_pb(p), score=score) for p, score in result.items
            ],
            source=_SOURCE[result.source],
        )

    async def ListCategories(
        self, request: pb.ListCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCategoriesResponse:
        return pb.ListCategoriesResponse(
            categories=[category_pb(c) for c in await self._catalog.list_categories()]
        )

    async def CreateProduct(
        self, request: pb.CreateProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateProductResponse:
        if not request.HasField("product"):
            raise InvalidArgument("product", "is required")
        product = await self._catalog.create_product(draft_of(request.product), request_id=request.request_id)
        return pb.CreateProductResponse(product=product_pb(product))

    async def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateProductResponse:
        if not request.HasField("product"):
            raise InvalidArgument("product", "is required")
        product = await self._catalog.update_product(
            request.product_id, draft_of(request.product), paths=list(request.update_mask.paths)
        )
        return pb.UpdateProductResponse(product=product_pb(product))

    async def DeleteProduct(
        self, request: pb.DeleteProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteProductResponse:
        return pb.DeleteProductResponse(
            product=product_pb(await self._catalog.delete_product(request.product_id))
        )
