import { error } from '@sveltejs/kit';
import { parseProductId } from '#lib/paging.ts';
import { findProduct, listPrices } from '#lib/server/api.ts';
import type { PageServerLoad } from './$types';

export const load: PageServerLoad = async ({ params, fetch }) => {
	const id = parseProductId(params.id);
	if (id === null) error(404, 'Product not found.');

	const [product, prices] = await Promise.all([findProduct(fetch, id), listPrices(fetch, id)]);
	if (!product) error(404, 'Product not found.');

	const history = [...prices].sort((a, b) => b.observed_at.localeCompare(a.observed_at));
	return { product, prices: history };
};
